#include "zctl/core/seq_store.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace zctl {
namespace {

std::runtime_error io_error(const std::string& what, const std::string& path) {
  return std::runtime_error(what + " " + path + ": " + std::strerror(errno));
}

}  // namespace

SeqStore::SeqStore(std::string path, uint64_t block) : path_(std::move(path)), block_(block) {
  std::ifstream in(path_);
  if (in) {
    // Format: "zctl-seq 1 reserved=<n> last=<n|-> clean=<0|1>"
    std::string magic, version, reserved_kv, last_kv, clean_kv;
    in >> magic >> version >> reserved_kv >> last_kv >> clean_kv;
    unsigned long long reserved = 0, last = 0;
    int clean = 0;
    const bool ok = magic == "zctl-seq" && version == "1" &&
                    std::sscanf(reserved_kv.c_str(), "reserved=%llu", &reserved) == 1 &&
                    std::sscanf(clean_kv.c_str(), "clean=%d", &clean) == 1;
    if (!ok) throw std::runtime_error("corrupt sequence file " + path_ + " (remove it only if no event consumer relies on seq)");
    if (clean == 1 && std::sscanf(last_kv.c_str(), "last=%llu", &last) == 1) {
      next_ = last + 1;
    } else {
      next_ = reserved + 1;
      recovered_from_crash_ = true;
    }
  } else if (errno != ENOENT) {
    throw io_error("cannot read", path_);
  }
  reserved_ = next_ - 1 + block_;
  write_state(reserved_, false);
}

SeqStore::~SeqStore() {
  try {
    close();
  } catch (...) {
    // A destructor cannot report; the next start treats it as a crash,
    // which is safe.
  }
}

uint64_t SeqStore::next() {
  if (next_ > reserved_) {
    // Durable first: memory never claims a reservation the disk lacks.
    const uint64_t reserved = reserved_ + block_;
    write_state(reserved, false);
    reserved_ = reserved;
  }
  return next_++;
}

void SeqStore::close() {
  if (closed_) return;
  closed_ = true;
  write_state(reserved_, true);
}

void SeqStore::write_state(uint64_t reserved, bool clean) {
  std::ostringstream text;
  text << "zctl-seq 1 reserved=" << reserved << " last=" << (next_ - 1) << " clean=" << (clean ? 1 : 0)
       << "\n";
  const std::string body = text.str();
  // Write-fsync-rename so a crash leaves either the old or the new state.
  const std::string tmp = path_ + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw io_error("cannot write", tmp);
  const bool written = ::write(fd, body.data(), body.size()) == static_cast<ssize_t>(body.size()) &&
                       ::fsync(fd) == 0;
  ::close(fd);
  if (!written) throw io_error("cannot write", tmp);
  if (::rename(tmp.c_str(), path_.c_str()) != 0) throw io_error("cannot rename to", path_);
  // The rename is durable only once the directory is: without this a power
  // loss can bring back an older state and numbers would be reused.
  const auto slash = path_.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path_.substr(0, slash == 0 ? 1 : slash);
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) throw io_error("cannot open directory", dir);
  const bool synced = ::fsync(dir_fd) == 0;
  ::close(dir_fd);
  if (!synced) throw io_error("cannot sync directory", dir);
}

}  // namespace zctl
