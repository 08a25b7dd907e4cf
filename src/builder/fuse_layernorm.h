// FuseSumLayerNorm: a LayerNormalization over the last axis whose input is a
// sum of tensors (a tree of Adds), one of which may be rows gathered from a
// constant table, becomes one KilnSumLayerNorm node: the GPU reads the terms,
// adds them and normalizes in registers, so neither the gathered rows nor the
// sum ever go to memory. BERT's embeddings (word rows by token id + position
// + token type, then LayerNorm) are the case it was written for: three
// launches and two full-size intermediates become one launch.
//
// The KilnSumLayerNorm node (GPU only, like KilnElementwise; src/cuda/layers/reduce.cc)
//   inputs   0 scale [n], 1 bias [n] or omitted, 2 indices (int32/int64, one
//            per output row) or omitted, 3.. terms (1 to 4): when indices are
//            given, term 0 is the table [V, n] whose row indices[r] output row
//            r adds (negative indices count from the end, out-of-range ones
//            add zeros, as the GPU Gather); every other term holds p rows of
//            n (any dims whose product is p * n) and output row r adds its
//            row r % p, which is how a term broadcast over leading dims reads.
//   output   y [..., n], X's dtype (rows = numel / n).
//   epsilon  float, as LayerNormalization's.
//
// When it fuses: the LayerNorm's axis is the last one, Scale and B (if any)
// hold n elements, only Y is used; every Add of the tree and the Gather have
// that single reader; each term's dims, right-aligned to Y's, are 1s followed
// by exactly Y's trailing dims, and its last dim is n; the Gather is axis 0
// of a constant rank-2 table with indices shaped like Y without n. n must be
// a multiple of 8 and at most 2048 elements of 16 bits (1024 float32), the
// GPU kernel's one-warp-per-row range. A constant term whose rows are all
// equal (BERT's token types of an all-zero ConstantOfShape) is stored as its
// first row (p = 1).
#pragma once

#include "ir/graph.h"

namespace kiln::builder {

// Requires concrete shapes. Returns the number of KilnSumLayerNorm nodes made.
int FuseSumLayerNorm(ir::Graph& graph);

}  // namespace kiln::builder
