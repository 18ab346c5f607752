#pragma once

// attnkit-eval: the output files. Every output is checked before any work
// (it can be created; it is neither an input nor another output, compared as
// resolved files) and written to a temporary file beside its target; the
// temporaries are renamed into place only once every output of the command
// has been written, and removed on any failure, so a failed command leaves
// no output and no temporary behind.

#include <cstddef>
#include <string>
#include <vector>

#include "attnkit/core/types.hpp"

namespace attnkit_eval {

/// A file named on the command line: the flag and the path as typed.
struct FileArg {
  std::string flag;
  std::string path;
};

/// Checks, before any work, that every output (empty paths are skipped) can
/// be created — its directory exists and is writable, it is not a directory
/// or another non-regular file — that none is the same file as an input, and
/// that no two outputs are the same file. Files are compared resolved:
/// existing ones by identity (std::filesystem::equivalent: symlinks and hard
/// links included), others by canonical directory plus name.
/// \throws UsageError naming the flag (both flags for a collision).
void check_outputs(const std::vector<FileArg>& inputs, const std::vector<FileArg>& outputs);

/// The outputs of one command, staged (see the file comment). Not copyable.
class StagedOutputs {
 public:
  StagedOutputs() = default;
  /// Removes every temporary that was not renamed into place.
  ~StagedOutputs();
  StagedOutputs(const StagedOutputs&) = delete;
  StagedOutputs& operator=(const StagedOutputs&) = delete;

  /// Creates the temporary for `flag`'s output `path` (mkstemps in the
  /// directory of the file `path` resolves to, with the same extension) and
  /// returns its path.
  /// \throws UsageError naming the flag if it cannot be created.
  std::string stage(const std::string& flag, const std::string& path);

  /// Writes `text` to a temporary beside `near` that is never renamed
  /// (removed with the others), e.g. the data a plot is drawn from, and
  /// returns its path.
  std::string scratch_text(const std::string& flag, const std::string& near, const std::string& extension,
                           const std::string& text);

  /// Stages `path` and writes C-order `data` of `shape` to it as .npy
  /// (T = float, double or std::int64_t).
  template <typename T>
  void write_npy(const std::string& flag, const std::string& path, const std::vector<attnkit::Index>& shape,
                 const T* data, std::size_t count);

  /// Stages `path`, writes `text` to it and returns the temporary's path.
  std::string write_text(const std::string& flag, const std::string& path, const std::string& text);

  /// Renames every staged output into place, in staging order.
  /// \throws UsageError naming the flag if a rename fails.
  void commit();

 private:
  struct Entry {
    std::string flag;
    std::string shown;   // the path as typed
    std::string target;  // the file it resolves to
    std::string temp;
    bool keep;  // renamed onto target by commit(); false: scratch
  };
  std::string create(const std::string& flag, const std::string& path, const std::string& extension,
                     bool keep);
  std::vector<Entry> entries_;
};

}  // namespace attnkit_eval
