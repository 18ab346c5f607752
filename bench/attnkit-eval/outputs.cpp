// attnkit-eval's output files (declared in outputs.hpp).

#include "attnkit-eval/outputs.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <system_error>

#include "attnkit-eval/errors.hpp"
#include "attnkit/io/npy.hpp"

namespace attnkit_eval {

namespace fs = std::filesystem;

namespace {

/// The file `path` names: the canonical path of its longest existing prefix
/// (symlinks and ".." resolved by the file system) plus the rest, lexically
/// normalised.
fs::path resolved(const std::string& path) {
  std::error_code ec;
  const fs::path absolute = fs::absolute(fs::path(path), ec);
  const fs::path p = fs::weakly_canonical(absolute, ec);
  return ec ? absolute.lexically_normal() : p;
}

bool same_file(const std::string& a, const std::string& b) {
  std::error_code ea, eb;
  if (fs::exists(a, ea) && fs::exists(b, eb)) {
    std::error_code ec;
    const bool same = fs::equivalent(a, b, ec);
    if (!ec) return same;
  }
  return resolved(a) == resolved(b);
}

void check_creatable(const FileArg& o) {
  std::error_code ec;
  const fs::path target = resolved(o.path);
  const fs::file_status st = fs::status(target, ec);
  if (fs::is_directory(st)) throw UsageError(o.flag + " '" + o.path + "': is a directory");
  if (fs::exists(st) && !fs::is_regular_file(st))
    throw UsageError(o.flag + " '" + o.path +
                     "': exists and is not a regular file (a device, pipe or socket)");
  fs::path dir = fs::path(o.path).parent_path();
  if (dir.empty()) dir = ".";
  if (!fs::is_directory(dir, ec))
    throw UsageError(o.flag + " '" + o.path + "': directory '" + dir.string() + "' does not exist");
  const fs::path target_dir = target.parent_path();
  if (::access(target_dir.c_str(), W_OK) != 0)
    throw UsageError(o.flag + " '" + o.path + "': directory '" + target_dir.string() + "' is not writable");
}

/// The permission bits a newly created file gets (0666 minus the umask).
mode_t creation_mode() {
  const mode_t mask = ::umask(0);
  ::umask(mask);
  return static_cast<mode_t>(0666 & ~mask);
}

}  // namespace

void check_outputs(const std::vector<FileArg>& inputs, const std::vector<FileArg>& outputs) {
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    const FileArg& o = outputs[i];
    if (o.path.empty()) continue;
    check_creatable(o);
    for (const FileArg& in : inputs)
      if (!in.path.empty() && same_file(o.path, in.path))
        throw UsageError(o.flag + " '" + o.path + "' is the same file as " + in.flag + " '" + in.path +
                         "': attnkit-eval never writes over an input");
    for (std::size_t j = 0; j < i; ++j)
      if (!outputs[j].path.empty() && same_file(o.path, outputs[j].path))
        throw UsageError(o.flag + " '" + o.path + "' and " + outputs[j].flag + " '" + outputs[j].path +
                         "' are the same file: give each output its own path");
  }
}

StagedOutputs::~StagedOutputs() {
  for (const Entry& e : entries_)
    if (!e.temp.empty()) ::unlink(e.temp.c_str());
}

std::string StagedOutputs::create(const std::string& flag, const std::string& path,
                                  const std::string& extension, bool keep) {
  const fs::path target = resolved(path);
  const std::string name = target.filename().string();
  std::string pattern = (target.parent_path() / ("." + name + ".attnkit-eval-XXXXXX" + extension)).string();
  const int fd = ::mkstemps(pattern.data(), static_cast<int>(extension.size()));
  if (fd < 0)
    throw UsageError(flag + " '" + path + "': cannot create a temporary file in '" +
                     target.parent_path().string() + "': " + std::strerror(errno));
  static const mode_t mode = creation_mode();
  const bool ok = ::fchmod(fd, mode) == 0;
  ::close(fd);
  entries_.push_back({flag, path, target.string(), pattern, keep});
  if (!ok)
    throw UsageError(flag + " '" + path + "': cannot set the permissions of '" + pattern +
                     "': " + std::strerror(errno));
  return pattern;
}

std::string StagedOutputs::stage(const std::string& flag, const std::string& path) {
  return create(flag, path, fs::path(path).extension().string(), true);
}

namespace {
void fill(const std::string& flag, const std::string& shown, const std::string& temp,
          const std::string& text) {
  std::ofstream out(temp, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) throw UsageError(flag + " '" + shown + "': write failed");
}
}  // namespace

std::string StagedOutputs::scratch_text(const std::string& flag, const std::string& near,
                                        const std::string& extension, const std::string& text) {
  const std::string temp = create(flag, near, extension, false);
  fill(flag, near, temp, text);
  return temp;
}

template <typename T>
void StagedOutputs::write_npy(const std::string& flag, const std::string& path,
                              const std::vector<attnkit::Index>& shape, const T* data, std::size_t count) {
  const std::string temp = stage(flag, path);
  try {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    if (!out) throw UsageError(flag + " '" + path + "': cannot open '" + temp + "' for writing");
    attnkit::write_npy(out, shape, data, count, {}, path);
    out.close();
    if (!out) throw UsageError(flag + " '" + path + "': write failed");
  } catch (const std::invalid_argument& e) {
    throw UsageError(flag + ": " + e.what());
  }
}

std::string StagedOutputs::write_text(const std::string& flag, const std::string& path,
                                      const std::string& text) {
  const std::string temp = stage(flag, path);
  fill(flag, path, temp, text);
  return temp;
}

void StagedOutputs::commit() {
  for (Entry& e : entries_) {
    if (!e.keep) continue;
    if (std::rename(e.temp.c_str(), e.target.c_str()) != 0)
      throw UsageError(e.flag + " '" + e.shown +
                       "': cannot move the finished file into place: " + std::strerror(errno));
    e.temp.clear();
  }
}

template void StagedOutputs::write_npy<float>(const std::string&, const std::string&,
                                              const std::vector<attnkit::Index>&, const float*, std::size_t);
template void StagedOutputs::write_npy<double>(const std::string&, const std::string&,
                                               const std::vector<attnkit::Index>&, const double*,
                                               std::size_t);
template void StagedOutputs::write_npy<std::int64_t>(const std::string&, const std::string&,
                                                     const std::vector<attnkit::Index>&, const std::int64_t*,
                                                     std::size_t);

}  // namespace attnkit_eval
