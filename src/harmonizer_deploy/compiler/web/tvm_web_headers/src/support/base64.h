// harmonizer-deploy: base64 streams (RFC 4648, '=' padding), used for tensors embedded in JSON. See README.md.
#ifndef HARMONIZER_TVM_SRC_SUPPORT_BASE64_H_
#define HARMONIZER_TVM_SRC_SUPPORT_BASE64_H_

#include <tvm/support/io.h>

#include <cstdint>

namespace tvm {
namespace support {

namespace b64 {
inline const char* Alphabet() { return "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"; }
inline int Value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}
inline bool IsSpace(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }
}  // namespace b64

// Decodes base64 text read from another stream.
class Base64InStream : public Stream {
 public:
  explicit Base64InStream(Stream* in) : in_(in) {}
  using Stream::Read;
  using Stream::Write;
  void InitPosition() {}  // whitespace is skipped while decoding
  size_t Read(void* ptr, size_t size) override {
    auto* out = static_cast<uint8_t*>(ptr);
    size_t done = 0;
    while (done < size) {
      if (avail_ == 0 && !Refill()) break;
      out[done++] = buf_[3 - avail_--];
    }
    return done;
  }
  size_t Write(const void*, size_t) override { return 0; }

 private:
  // Decode the next 4-character group into buf_; false at end of input.
  bool Refill() {
    if (ended_) return false;
    int vals[4];
    int got = 0;
    while (got < 4) {
      char c;
      if (in_->Read(&c, 1) != 1) return false;
      if (b64::IsSpace(c)) continue;
      vals[got++] = (c == '=') ? -2 : b64::Value(c);
      if (vals[got - 1] == -1) return false;
    }
    if (vals[0] < 0 || vals[1] < 0) return false;
    uint32_t bits = (uint32_t(vals[0]) << 18) | (uint32_t(vals[1]) << 12);
    int bytes = 1;
    if (vals[2] >= 0) {
      bits |= uint32_t(vals[2]) << 6;
      bytes = 2;
      if (vals[3] >= 0) {
        bits |= uint32_t(vals[3]);
        bytes = 3;
      }
    }
    if (bytes < 3) ended_ = true;
    uint8_t decoded[3] = {uint8_t(bits >> 16), uint8_t(bits >> 8), uint8_t(bits)};
    // keep the decoded bytes right-aligned in buf_ so Read takes buf_[3 - avail_]
    for (int i = 0; i < bytes; ++i) buf_[3 - bytes + i] = decoded[i];
    avail_ = bytes;
    return true;
  }
  Stream* in_;
  uint8_t buf_[3] = {0, 0, 0};
  int avail_ = 0;
  bool ended_ = false;
};

// Encodes bytes as base64 text into another stream; call Finish() once at the end.
class Base64OutStream : public Stream {
 public:
  explicit Base64OutStream(Stream* out) : out_(out) {}
  using Stream::Read;
  using Stream::Write;
  size_t Write(const void* ptr, size_t size) override {
    const auto* in = static_cast<const uint8_t*>(ptr);
    for (size_t i = 0; i < size; ++i) {
      buf_[n_++] = in[i];
      if (n_ == 3) Flush();
    }
    return size;
  }
  size_t Read(void*, size_t) override { return 0; }
  void Finish() {
    if (n_ != 0) Flush();
  }

 private:
  void Flush() {
    const char* a = b64::Alphabet();
    uint32_t bits = (uint32_t(buf_[0]) << 16) | (n_ > 1 ? uint32_t(buf_[1]) << 8 : 0) | (n_ > 2 ? buf_[2] : 0);
    char text[4] = {a[(bits >> 18) & 63], a[(bits >> 12) & 63], n_ > 1 ? a[(bits >> 6) & 63] : '=',
                    n_ > 2 ? a[bits & 63] : '='};
    out_->Write(static_cast<const void*>(text), 4);
    n_ = 0;
    buf_[0] = buf_[1] = buf_[2] = 0;
  }
  Stream* out_;
  uint8_t buf_[3] = {0, 0, 0};
  int n_ = 0;
};

}  // namespace support
}  // namespace tvm

#endif  // HARMONIZER_TVM_SRC_SUPPORT_BASE64_H_
