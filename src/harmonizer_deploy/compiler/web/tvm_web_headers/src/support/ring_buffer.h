// harmonizer-deploy: a FIFO byte queue for the RPC endpoint's reader and writer. See README.md.
#ifndef HARMONIZER_TVM_SRC_SUPPORT_RING_BUFFER_H_
#define HARMONIZER_TVM_SRC_SUPPORT_RING_BUFFER_H_

#include <algorithm>
#include <cstring>
#include <vector>

namespace tvm {
namespace support {

// Bytes are appended at the back and consumed from the front; storage is compacted lazily.
class RingBuffer {
 public:
  size_t bytes_available() const { return data_.size() - head_; }

  // Make room for at least n buffered bytes without reallocating on the next writes.
  void Reserve(size_t n) { data_.reserve(head_ + n); }

  void Read(void* out, size_t size) {
    size_t n = std::min(size, bytes_available());
    if (n != 0) std::memcpy(out, data_.data() + head_, n);
    Consume(n);
  }

  void Write(const void* in, size_t size) {
    const char* p = static_cast<const char*>(in);
    data_.insert(data_.end(), p, p + size);
  }

  // Hand up to max_nbytes buffered bytes to f(const void*, size_t) -> bytes it took; returns that count.
  template <typename F>
  size_t ReadWithCallback(F f, size_t max_nbytes) {
    size_t n = std::min(max_nbytes, bytes_available());
    if (n == 0) return 0;
    size_t taken = f(static_cast<const void*>(data_.data() + head_), n);
    Consume(std::min(taken, n));
    return taken;
  }

  // Let f(void*, size_t) -> bytes it wrote fill up to max_nbytes new bytes; returns that count.
  template <typename F>
  size_t WriteWithCallback(F f, size_t max_nbytes) {
    size_t old = data_.size();
    data_.resize(old + max_nbytes);
    size_t wrote = f(static_cast<void*>(data_.data() + old), max_nbytes);
    data_.resize(old + std::min(wrote, max_nbytes));
    return wrote;
  }

 private:
  void Consume(size_t n) {
    head_ += n;
    if (head_ == data_.size()) {
      data_.clear();
      head_ = 0;
    } else if (head_ > 4096 && head_ * 2 > data_.size()) {
      data_.erase(data_.begin(), data_.begin() + static_cast<std::ptrdiff_t>(head_));
      head_ = 0;
    }
  }
  std::vector<char> data_;
  size_t head_ = 0;
};

}  // namespace support
}  // namespace tvm

#endif  // HARMONIZER_TVM_SRC_SUPPORT_RING_BUFFER_H_
