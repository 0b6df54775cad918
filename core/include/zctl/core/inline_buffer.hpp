// Append-only byte buffer with inline storage, for building event text on
// the hot path without an allocation until it outgrows N bytes.
// Copying copies the bytes (moves do too: inline storage cannot be stolen).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <memory>
#include <string_view>

namespace zctl {

template <size_t N>
class InlineBuffer {
 public:
  InlineBuffer() = default;
  InlineBuffer(const InlineBuffer& other) { append(other.data(), other.size()); }
  InlineBuffer& operator=(const InlineBuffer& other) {
    if (this != &other) {
      size_ = 0;
      append(other.data(), other.size());
    }
    return *this;
  }

  void append(const char* bytes, size_t n) {
    if (n > capacity_ - size_) grow(n);
    std::memcpy(data_ + size_, bytes, n);
    size_ += n;
  }
  void append(std::string_view text) { append(text.data(), text.size()); }
  void push_back(char c) {
    if (size_ == capacity_) grow(1);
    data_[size_++] = c;
  }

  const char* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::string_view view() const { return {data_, size_}; }

 private:
  void grow(size_t extra) {
    const size_t capacity = std::max(capacity_ * 2, size_ + extra);
    auto heap = std::make_unique<char[]>(capacity);
    std::memcpy(heap.get(), data_, size_);
    heap_ = std::move(heap);
    data_ = heap_.get();
    capacity_ = capacity;
  }

  char inline_[N];
  char* data_ = inline_;
  size_t size_ = 0;
  size_t capacity_ = N;
  std::unique_ptr<char[]> heap_;
};

}  // namespace zctl
