// harmonizer-deploy: minimal binary stream interface for building TVM's web runtime (see README.md).
#ifndef HARMONIZER_TVM_SUPPORT_IO_H_
#define HARMONIZER_TVM_SUPPORT_IO_H_

#include <cstddef>
#include <cstdint>

namespace tvm {
namespace support {

// Serializer<T>::Write(Stream*, const T&) / Read(Stream*, T*) define the wire format of T.
// The primary template is disabled; serializer.h provides the types the runtime uses.
template <typename T, typename Enable = void>
struct Serializer {
  static constexpr bool enabled = false;
};

// A byte stream. Subclasses implement the two raw methods; typed access goes through Serializer.
class Stream {
 public:
  virtual ~Stream() = default;
  virtual size_t Read(void* ptr, size_t size) = 0;
  virtual size_t Write(const void* ptr, size_t size) = 0;

  template <typename T>
  void Write(const T& value) {
    static_assert(Serializer<T>::enabled, "type has no Serializer");
    Serializer<T>::Write(this, value);
  }

  template <typename T>
  bool Read(T* out) {
    static_assert(Serializer<T>::enabled, "type has no Serializer");
    return Serializer<T>::Read(this, out);
  }

  template <typename T>
  void WriteArray(const T* values, size_t count) {
    for (size_t i = 0; i < count; ++i) Write<T>(values[i]);
  }

  template <typename T>
  bool ReadArray(T* values, size_t count) {
    for (size_t i = 0; i < count; ++i) {
      if (!Read<T>(values + i)) return false;
    }
    return true;
  }
};

}  // namespace support
}  // namespace tvm

#endif  // HARMONIZER_TVM_SUPPORT_IO_H_
