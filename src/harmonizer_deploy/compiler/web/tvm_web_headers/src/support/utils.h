// harmonizer-deploy: the string helpers the web runtime sources call. See README.md.
#ifndef HARMONIZER_TVM_SRC_SUPPORT_UTILS_H_
#define HARMONIZER_TVM_SRC_SUPPORT_UTILS_H_

#include <string>

namespace tvm {
namespace support {

inline bool StartsWith(const std::string& text, const std::string& prefix) {
  return text.size() >= prefix.size() && text.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace support
}  // namespace tvm

#endif  // HARMONIZER_TVM_SRC_SUPPORT_UTILS_H_
