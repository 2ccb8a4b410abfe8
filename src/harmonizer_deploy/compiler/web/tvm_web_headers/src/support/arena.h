// harmonizer-deploy: a bump allocator for temporary RPC buffers, freed all at once. See README.md.
#ifndef HARMONIZER_TVM_SRC_SUPPORT_ARENA_H_
#define HARMONIZER_TVM_SRC_SUPPORT_ARENA_H_

#include <cstddef>
#include <memory>
#include <vector>

namespace tvm {
namespace support {

class Arena {
 public:
  // Uninitialised storage for `count` objects of T, valid until RecycleAll().
  template <typename T>
  T* allocate_(int count) {
    size_t bytes = sizeof(T) * static_cast<size_t>(count > 0 ? count : 0) + alignof(T);
    blocks_.emplace_back(new char[bytes == 0 ? 1 : bytes]);
    void* p = blocks_.back().get();
    size_t space = bytes;
    return static_cast<T*>(std::align(alignof(T), sizeof(T) * static_cast<size_t>(count), p, space));
  }

  void RecycleAll() { blocks_.clear(); }

 private:
  std::vector<std::unique_ptr<char[]>> blocks_;
};

}  // namespace support
}  // namespace tvm

#endif  // HARMONIZER_TVM_SRC_SUPPORT_ARENA_H_
