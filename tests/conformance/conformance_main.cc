// Placeholder: the ONNX backend-test runner is being written.
int main() { return 0; }
