// harmonizer-deploy: widening of IEEE-754 binary floats (e.g. half -> float), used by the runtime's sort of
// float16 keys. Written for this project from the IEEE-754 format; see README.md.
#ifndef HARMONIZER_TVM_BUILTIN_FP16_H_
#define HARMONIZER_TVM_BUILTIN_FP16_H_

#include <cstdint>
#include <cstring>

// Widen a value stored as SrcRepT bits (SrcSigBits mantissa bits) to DstT (DstSigBits mantissa bits).
template <typename SrcT, typename SrcRepT, int SrcSigBits, typename DstT, typename DstRepT, int DstSigBits>
static inline DstT __extendXfYf2__(SrcT value) {
  constexpr int kSrcBits = sizeof(SrcRepT) * 8;
  constexpr int kDstBits = sizeof(DstRepT) * 8;
  constexpr int kSrcExpBits = kSrcBits - SrcSigBits - 1;
  constexpr int kDstExpBits = kDstBits - DstSigBits - 1;
  constexpr int kSrcBias = (1 << (kSrcExpBits - 1)) - 1;
  constexpr int kDstBias = (1 << (kDstExpBits - 1)) - 1;
  constexpr int kSrcExpMax = (1 << kSrcExpBits) - 1;
  constexpr int kDstExpMax = (1 << kDstExpBits) - 1;

  SrcRepT bits;
  std::memcpy(&bits, &value, sizeof(SrcRepT));
  const DstRepT sign = static_cast<DstRepT>((bits >> (kSrcBits - 1)) & 1u) << (kDstBits - 1);
  int exponent = static_cast<int>((bits >> SrcSigBits) & static_cast<SrcRepT>(kSrcExpMax));
  DstRepT mantissa = static_cast<DstRepT>(bits & ((static_cast<SrcRepT>(1) << SrcSigBits) - 1));
  DstRepT out;
  if (exponent == kSrcExpMax) {  // inf or NaN: keep the payload
    out = sign | (static_cast<DstRepT>(kDstExpMax) << DstSigBits) | (mantissa << (DstSigBits - SrcSigBits));
  } else if (exponent != 0) {  // normal
    out = sign | (static_cast<DstRepT>(exponent - kSrcBias + kDstBias) << DstSigBits) |
          (mantissa << (DstSigBits - SrcSigBits));
  } else if (mantissa == 0) {  // signed zero
    out = sign;
  } else {  // subnormal source: normalise (every such value is normal in the wider type)
    int shift = 0;
    while ((mantissa & (static_cast<DstRepT>(1) << SrcSigBits)) == 0) {
      mantissa <<= 1;
      ++shift;
    }
    mantissa &= (static_cast<DstRepT>(1) << SrcSigBits) - 1;
    out = sign | (static_cast<DstRepT>(1 - shift - kSrcBias + kDstBias) << DstSigBits) |
          (mantissa << (DstSigBits - SrcSigBits));
  }
  DstT result;
  std::memcpy(&result, &out, sizeof(DstT));
  return result;
}

#endif  // HARMONIZER_TVM_BUILTIN_FP16_H_
