#include "modules/cpython/log.h"

#include <unistd.h>

#include <cerrno>
#include <iostream>
#include <memory>
#include <mutex>

namespace modhost {
namespace {

std::mutex g_sink_mutex;
std::shared_ptr<const log_sink> g_sink;  // null: stderr

void write_to_stderr(std::string line) {
  line += '\n';
  std::cerr.flush();
  for (std::size_t done = 0; done < line.size();) {
    ssize_t n = ::write(STDERR_FILENO, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<std::size_t>(n);
  }
}

}  // namespace

void set_log_sink(log_sink sink) {
  auto next = sink ? std::make_shared<const log_sink>(std::move(sink)) : nullptr;
  std::lock_guard<std::mutex> lock(g_sink_mutex);
  g_sink = std::move(next);
}

void log_line(const std::string& line) {
  std::shared_ptr<const log_sink> sink;
  {
    std::lock_guard<std::mutex> lock(g_sink_mutex);
    sink = g_sink;
  }
  if (sink) {
    try {
      (*sink)(line);
      return;
    } catch (...) {  // a broken sink loses no message
    }
  }
  write_to_stderr(line);
}

}  // namespace modhost
