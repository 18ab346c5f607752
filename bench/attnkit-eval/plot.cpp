// attnkit-eval's plot step (declared in plot.hpp). ATTNKIT_EVAL_DEFAULT_PYTHON,
// ATTNKIT_EVAL_INSTALLED_SCRIPT and ATTNKIT_EVAL_SOURCE_SCRIPT are set for this
// file by bench/CMakeLists.txt.

#include "attnkit-eval/plot.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "attnkit-eval/errors.hpp"

extern char** environ;

namespace attnkit_eval {

namespace {

struct ProcessResult {
  /// The exit status, or -1 if it could not be started or did not exit.
  int status = -1;
  /// A signal that ended it (0: none).
  int signal = 0;
  /// What it wrote on stderr.
  std::string err;
};

/// Runs argv[0] (searched in PATH) with argv; stdout goes to /dev/null, stderr
/// is captured.
ProcessResult run_process(const std::vector<std::string>& args) {
  ProcessResult result;
  std::vector<char*> argv;
  for (const std::string& a : args)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  int pipe_fds[2];
  if (::pipe(pipe_fds) != 0) return result;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 2);
  posix_spawn_file_actions_addclose(&actions, pipe_fds[0]);
  posix_spawn_file_actions_addclose(&actions, pipe_fds[1]);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(pipe_fds[1]);
  if (rc == 0) {
    char buf[4096];
    for (;;) {
      const ssize_t got = ::read(pipe_fds[0], buf, sizeof buf);
      if (got > 0) {
        result.err.append(buf, static_cast<std::size_t>(got));
        continue;
      }
      if (got < 0 && errno == EINTR) continue;
      break;
    }
  }
  ::close(pipe_fds[0]);
  if (rc != 0) return result;
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return result;
  if (WIFEXITED(status)) result.status = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result.signal = WTERMSIG(status);
  return result;
}

/// The last non-empty line of `text`, at most 300 characters.
std::string last_line(const std::string& text) {
  std::size_t end = text.find_last_not_of(" \t\r\n");
  if (end == std::string::npos) return "";
  const std::size_t begin = text.find_last_of('\n', end);
  std::string line = text.substr(begin == std::string::npos ? 0 : begin + 1,
                                 end + 1 - (begin == std::string::npos ? 0 : begin + 1));
  if (line.size() > 300) line = line.substr(0, 297) + "...";
  return line;
}

/// Directory of the running executable ("" if unknown).
std::filesystem::path executable_dir() {
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::filesystem::path() : exe.parent_path();
}

}  // namespace

PlotTools find_plot_tools() {
  PlotTools t;
  if (const char* p = std::getenv("ATTNKIT_PYTHON"); p && *p)
    t.python = p;
  else
    t.python = std::string(ATTNKIT_EVAL_DEFAULT_PYTHON).empty() ? "python3" : ATTNKIT_EVAL_DEFAULT_PYTHON;
  if (const char* s = std::getenv("ATTNKIT_EVAL_PLOT_SCRIPT"); s && *s) {
    t.script = s;
    return t;
  }
  std::vector<std::filesystem::path> candidates;
  const auto dir = executable_dir();
  if (!dir.empty()) candidates.push_back(dir / ATTNKIT_EVAL_INSTALLED_SCRIPT);
  candidates.push_back(ATTNKIT_EVAL_SOURCE_SCRIPT);
  for (const auto& c : candidates) {
    std::error_code ec;
    if (std::filesystem::is_regular_file(c, ec)) {
      t.script = c.lexically_normal().string();  // bin/../share/... -> share/...
      break;
    }
  }
  return t;
}

void check_plot_tools(const PlotTools& t) {
  if (t.script.empty())
    throw UsageError("--plot: the plot script attnkit_eval_plot.py was not found next to attnkit-eval (" +
                     std::string(ATTNKIT_EVAL_INSTALLED_SCRIPT) +
                     ") nor in the source tree; set ATTNKIT_EVAL_PLOT_SCRIPT to its path");
  struct stat st {};
  if (::stat(t.script.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || ::access(t.script.c_str(), R_OK) != 0)
    throw UsageError(
        "--plot: the plot script '" + t.script +
        "' is not a readable regular file; set ATTNKIT_EVAL_PLOT_SCRIPT to attnkit_eval_plot.py");
  const ProcessResult r = run_process({t.python, "-c", "import matplotlib"});
  if (r.status == -1 || r.status == 127)
    throw UsageError("--plot: cannot run Python '" + t.python +
                     "'; install python3 or set ATTNKIT_PYTHON to an interpreter");
  if (r.status != 0)
    throw UsageError("--plot: matplotlib is not installed for '" + t.python +
                     "'; install it with 'sudo apt-get install python3-matplotlib' (Debian/Ubuntu) or "
                     "'pip install matplotlib', or set ATTNKIT_PYTHON to a Python that has it");
}

void draw_plot(const PlotTools& t, const std::string& json_path, const std::string& png_path,
               const std::string& shown) {
  const ProcessResult r = run_process({t.python, t.script, json_path, png_path});
  const std::string who = "--plot '" + shown + "': the plot script '" + t.script + "'";
  if (r.status != 0) {
    const std::string how = r.signal != 0  ? "killed by signal " + std::to_string(r.signal)
                            : r.status < 0 ? "could not be run"
                                           : "exit " + std::to_string(r.status);
    const std::string line = last_line(r.err);
    throw UsageError(who + " failed (" + how + ")" + (line.empty() ? "" : ": " + line));
  }
  std::ifstream png(png_path, std::ios::binary);
  char signature[8] = {};
  png.read(signature, sizeof signature);
  if (png.gcount() != 8 || std::string(signature, 8) != "\x89PNG\r\n\x1a\n")
    throw UsageError(who + " exited 0 but wrote no PNG");
}

}  // namespace attnkit_eval
