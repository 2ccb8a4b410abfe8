// harmonizer-deploy: streams over an in-memory byte string (reading artifacts, writing blobs). See README.md.
#ifndef HARMONIZER_TVM_SRC_SUPPORT_BYTES_IO_H_
#define HARMONIZER_TVM_SRC_SUPPORT_BYTES_IO_H_

#include <tvm/ffi/string.h>
#include <tvm/support/io.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace tvm {
namespace support {

// Reads from bytes owned by the caller; they must outlive the stream.
class BytesInStream : public Stream {
 public:
  explicit BytesInStream(const std::string& bytes) : data_(bytes.data()), size_(bytes.size()) {}
  explicit BytesInStream(const ffi::Bytes& bytes) : data_(bytes.data()), size_(bytes.size()) {}
  using Stream::Read;
  using Stream::Write;
  size_t Read(void* ptr, size_t size) override {
    size_t n = std::min(size, size_ - pos_);
    if (n != 0) std::memcpy(ptr, data_ + pos_, n);
    pos_ += n;
    return n;
  }
  size_t Write(const void*, size_t) override { return 0; }  // read-only

 private:
  const char* data_;
  size_t size_;
  size_t pos_ = 0;
};

// Appends to a caller-owned std::string.
class BytesOutStream : public Stream {
 public:
  explicit BytesOutStream(std::string* out) : out_(out) {}
  using Stream::Read;
  using Stream::Write;
  size_t Read(void*, size_t) override { return 0; }  // write-only
  size_t Write(const void* ptr, size_t size) override {
    out_->append(static_cast<const char*>(ptr), size);
    return size;
  }

 private:
  std::string* out_;
};

}  // namespace support
}  // namespace tvm

#endif  // HARMONIZER_TVM_SRC_SUPPORT_BYTES_IO_H_
