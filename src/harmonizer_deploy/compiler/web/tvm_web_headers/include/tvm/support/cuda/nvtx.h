// harmonizer-deploy: NVTX profiling ranges are CUDA-only; in the browser they are empty scopes. See README.md.
#ifndef HARMONIZER_TVM_SUPPORT_CUDA_NVTX_H_
#define HARMONIZER_TVM_SUPPORT_CUDA_NVTX_H_

#include <string>

namespace tvm {
namespace support {

class NVTXScopedRange {
 public:
  explicit NVTXScopedRange(const char*) {}
  explicit NVTXScopedRange(const std::string&) {}
  NVTXScopedRange(const NVTXScopedRange&) = delete;
  NVTXScopedRange& operator=(const NVTXScopedRange&) = delete;
};

}  // namespace support
}  // namespace tvm

#endif  // HARMONIZER_TVM_SUPPORT_CUDA_NVTX_H_
