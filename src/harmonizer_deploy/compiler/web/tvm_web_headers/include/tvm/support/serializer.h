// harmonizer-deploy: the wire format TVM's compiler writes (little-endian scalars; a uint64 count before
// strings, sequences and maps), for the types the web runtime reads. See README.md.
#ifndef HARMONIZER_TVM_SUPPORT_SERIALIZER_H_
#define HARMONIZER_TVM_SUPPORT_SERIALIZER_H_

#include <dlpack/dlpack.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/endian.h>
#include <tvm/ffi/string.h>
#include <tvm/support/io.h>

#include <cstdint>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tvm {
namespace support {

namespace detail {
inline bool ReadCount(Stream* s, uint64_t* n);
inline void WriteCount(Stream* s, uint64_t n);
}  // namespace detail

template <typename T>
struct Serializer<T, std::enable_if_t<std::is_arithmetic_v<T>>> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const T& v) {
    T tmp = v;
    if (!TVM_FFI_IO_NO_ENDIAN_SWAP) ffi::ByteSwap(&tmp, sizeof(T), 1);
    s->Write(static_cast<const void*>(&tmp), sizeof(T));
  }
  static bool Read(Stream* s, T* v) {
    if (s->Read(static_cast<void*>(v), sizeof(T)) != sizeof(T)) return false;
    if (!TVM_FFI_IO_NO_ENDIAN_SWAP) ffi::ByteSwap(v, sizeof(T), 1);
    return true;
  }
};

template <typename T>
struct Serializer<T, std::enable_if_t<std::is_enum_v<T>>> {
  static constexpr bool enabled = true;
  using Raw = std::underlying_type_t<T>;
  static void Write(Stream* s, const T& v) { Serializer<Raw>::Write(s, static_cast<Raw>(v)); }
  static bool Read(Stream* s, T* v) {
    Raw raw;
    if (!Serializer<Raw>::Read(s, &raw)) return false;
    *v = static_cast<T>(raw);
    return true;
  }
};

namespace detail {
inline bool ReadCount(Stream* s, uint64_t* n) { return Serializer<uint64_t>::Read(s, n); }
inline void WriteCount(Stream* s, uint64_t n) { Serializer<uint64_t>::Write(s, n); }
}  // namespace detail

template <>
struct Serializer<std::string> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const std::string& v) {
    detail::WriteCount(s, v.size());
    if (!v.empty()) s->Write(static_cast<const void*>(v.data()), v.size());
  }
  static bool Read(Stream* s, std::string* v) {
    uint64_t n;
    if (!detail::ReadCount(s, &n)) return false;
    v->assign(static_cast<size_t>(n), '\0');
    return n == 0 || s->Read(static_cast<void*>(&(*v)[0]), v->size()) == v->size();
  }
};

template <>
struct Serializer<ffi::String> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const ffi::String& v) {
    detail::WriteCount(s, v.size());
    if (v.size() != 0) s->Write(static_cast<const void*>(v.data()), v.size());
  }
  static bool Read(Stream* s, ffi::String* v) {
    std::string tmp;
    if (!Serializer<std::string>::Read(s, &tmp)) return false;
    *v = ffi::String(tmp);
    return true;
  }
};

template <typename A, typename B>
struct Serializer<std::pair<A, B>> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const std::pair<A, B>& v) {
    Serializer<A>::Write(s, v.first);
    Serializer<B>::Write(s, v.second);
  }
  static bool Read(Stream* s, std::pair<A, B>* v) {
    return Serializer<A>::Read(s, &v->first) && Serializer<B>::Read(s, &v->second);
  }
};

template <typename T>
struct Serializer<std::vector<T>> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const std::vector<T>& v) {
    detail::WriteCount(s, v.size());
    for (const T& item : v) Serializer<T>::Write(s, item);
  }
  static bool Read(Stream* s, std::vector<T>* v) {
    uint64_t n;
    if (!detail::ReadCount(s, &n)) return false;
    v->clear();
    v->resize(static_cast<size_t>(n));
    for (auto& item : *v) {
      if (!Serializer<T>::Read(s, &item)) return false;
    }
    return true;
  }
};

template <typename K, typename V>
struct Serializer<std::unordered_map<K, V>> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const std::unordered_map<K, V>& v) {
    detail::WriteCount(s, v.size());
    for (const auto& kv : v) {
      Serializer<K>::Write(s, kv.first);
      Serializer<V>::Write(s, kv.second);
    }
  }
  static bool Read(Stream* s, std::unordered_map<K, V>* v) {
    uint64_t n;
    if (!detail::ReadCount(s, &n)) return false;
    v->clear();
    for (uint64_t i = 0; i < n; ++i) {
      K key;
      V value;
      if (!Serializer<K>::Read(s, &key) || !Serializer<V>::Read(s, &value)) return false;
      (*v)[std::move(key)] = std::move(value);
    }
    return true;
  }
};

template <typename T>
struct Serializer<ffi::Array<T>> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const ffi::Array<T>& v) {
    detail::WriteCount(s, v.size());
    for (size_t i = 0; i < v.size(); ++i) Serializer<T>::Write(s, v[i]);
  }
  static bool Read(Stream* s, ffi::Array<T>* v) {
    uint64_t n;
    if (!detail::ReadCount(s, &n)) return false;
    ffi::Array<T> out;
    for (uint64_t i = 0; i < n; ++i) {
      T item;
      if (!Serializer<T>::Read(s, &item)) return false;
      out.push_back(item);
    }
    *v = out;
    return true;
  }
};

template <typename K, typename V>
struct Serializer<ffi::Map<K, V>> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const ffi::Map<K, V>& v) {
    detail::WriteCount(s, v.size());
    for (const auto& kv : v) {
      Serializer<K>::Write(s, kv.first);
      Serializer<V>::Write(s, kv.second);
    }
  }
  static bool Read(Stream* s, ffi::Map<K, V>* v) {
    uint64_t n;
    if (!detail::ReadCount(s, &n)) return false;
    ffi::Map<K, V> out;
    for (uint64_t i = 0; i < n; ++i) {
      K key;
      V value;
      if (!Serializer<K>::Read(s, &key) || !Serializer<V>::Read(s, &value)) return false;
      out.Set(key, value);
    }
    *v = out;
    return true;
  }
};

// DLDataType: code (u8), bits (u8), lanes (u16).
template <>
struct Serializer<DLDataType> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const DLDataType& v) {
    Serializer<uint8_t>::Write(s, v.code);
    Serializer<uint8_t>::Write(s, v.bits);
    Serializer<uint16_t>::Write(s, v.lanes);
  }
  static bool Read(Stream* s, DLDataType* v) {
    return Serializer<uint8_t>::Read(s, &v->code) && Serializer<uint8_t>::Read(s, &v->bits) &&
           Serializer<uint16_t>::Read(s, &v->lanes);
  }
};

// DLDevice: device type and id, both int32.
template <>
struct Serializer<DLDevice> {
  static constexpr bool enabled = true;
  static void Write(Stream* s, const DLDevice& v) {
    Serializer<int32_t>::Write(s, static_cast<int32_t>(v.device_type));
    Serializer<int32_t>::Write(s, static_cast<int32_t>(v.device_id));
  }
  static bool Read(Stream* s, DLDevice* v) {
    int32_t type = 0, id = 0;
    if (!Serializer<int32_t>::Read(s, &type) || !Serializer<int32_t>::Read(s, &id)) return false;
    v->device_type = static_cast<DLDeviceType>(type);
    v->device_id = id;
    return true;
  }
};

}  // namespace support
}  // namespace tvm

#endif  // HARMONIZER_TVM_SUPPORT_SERIALIZER_H_
