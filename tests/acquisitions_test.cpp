// Acquisitions made from C++ host bindings (modhost::attach_release) follow
// a module's reloads and unload exactly, against a host that refuses a
// second registration under the same key: a release missed before the new
// code registers again would make the reload fail.
#include <gtest/gtest.h>
#include <pybind11/embed.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "modules/acquisitions.h"
#include "modules/module_cache.h"
#include "tests/cache_test.h"

namespace py = pybind11;
using namespace modhost::testing;
using modhost::python_error;
using modhost::reload_outcome;

namespace {

// A C++ host, bound for plugins as the module `cpp_host`: register(key,
// value) refuses a key already registered; start_ticker(name) starts a C++
// thread that runs until its release stops it. Every effect is attached to
// the calling module through modhost::attach_release.
class keyed_host {
 public:
  explicit keyed_host(modhost::module_cache& cache) : cache_(cache) {
    module_ = py::reinterpret_steal<py::module_>(PyModule_New("cpp_host"));  // new reference
    module_.def("register", [this](const std::string& key, py::object value) {
      modhost::attach_release(
          cache_, "key " + key, [this, key, value] { add(key, value); }, [this, key] { remove(key); });
    });
    module_.def("start_ticker", [this](const std::string& name) {
      modhost::attach_release(
          cache_, "ticker " + name, [this] { start_ticker(); }, [this] { stop_ticker(); });
    });
    module_.def("release_raises", [this](const std::string& key) {
      modhost::attach_release(
          cache_, "key " + key, [this, key] { add(key, py::none()); },
          [key]() -> void { throw std::runtime_error("cannot release " + key); });
    });
    py::module_::import("sys").attr("modules")["cpp_host"] = module_;
  }
  ~keyed_host() {
    py::module_::import("sys").attr("modules").attr("pop")("cpp_host", py::none());
    while (!tickers_.empty()) stop_ticker();
  }

  void add(const std::string& key, py::object value) {
    if (items.count(key)) throw py::key_error("'" + key + "' is already registered");
    items.emplace(key, std::move(value));
    log.push_back("+" + key);
  }
  void remove(const std::string& key) {
    if (!items.erase(key)) throw std::runtime_error("no registration '" + key + "'");
    log.push_back("-" + key);
  }
  std::vector<std::string> keys() const {
    std::vector<std::string> out;
    for (const auto& [key, value] : items) out.push_back(key);
    return out;
  }
  int tickers_running() const { return running_; }
  int most_tickers_at_once() const { return most_; }

  std::map<std::string, py::object> items;
  std::vector<std::string> log;

 private:
  struct ticker {
    std::atomic<bool> stop{false};
    std::thread thread;
  };
  void start_ticker() {
    auto t = std::make_unique<ticker>();
    int now = ++running_;
    most_ = std::max(most_.load(), now);
    ticker* raw = t.get();
    t->thread = std::thread([raw] {
      while (!raw->stop.load()) std::this_thread::yield();
    });
    tickers_.push_back(std::move(t));
  }
  void stop_ticker() {
    auto t = std::move(tickers_.back());
    tickers_.pop_back();
    t->stop = true;
    t->thread.join();
    --running_;
  }

  modhost::module_cache& cache_;
  py::module_ module_;
  std::vector<std::unique_ptr<ticker>> tickers_;
  std::atomic<int> running_{0};
  std::atomic<int> most_{0};
};

class Acquisitions : public cache_test {
 protected:
  keyed_host host_{cache()};

  // The plugins go before the host they registered with: what they acquired
  // is released by then (the interpreter's exit would release it, and the
  // host would be gone).
  void TearDown() override {
    for (const auto& name : cache().modules()) {
      if (name.compare(0, 3, "ac_") != 0 || !cache().find(name)) continue;
      try {
        (void)cache().unload(name, /*force=*/true);
      } catch (const python_error& e) {
        ADD_FAILURE() << "unload of " << name << ": " << e.what();
      }
    }
    cache_test::TearDown();
  }

  static std::string plugin(int version, const std::string& extra = "") {
    return "import cpp_host\nVERSION = " + std::to_string(version) +
           "\ndef handler():\n    return VERSION\ncpp_host.register('handler', handler)\n" + extra;
  }
  int fire(const std::string& key) { return host_.items.at(key)().cast<int>(); }
};

}  // namespace

TEST_F(Acquisitions, AKeyedRegistrationSurvivesFiveReloadsAsExactlyOneTheNewest) {
  write("ac_five.py", plugin(1));
  import("ac_five");
  for (int version = 2; version <= 6; ++version) {
    write("ac_five.py", plugin(version));
    modhost::reload_options options;
    options.deep = version % 2 == 0;
    auto report = cache().reload("ac_five", options);
    ASSERT_EQ(report.outcome, reload_outcome::reloaded) << (report.error ? report.error->what() : "");
    EXPECT_EQ(host_.keys(), std::vector<std::string>{"handler"});
    EXPECT_EQ(fire("handler"), version);
  }
  EXPECT_EQ(host_.log.size(), 11u);  // +, then (-, +) per reload
  auto lines = modhost::acquired(cache(), "ac_five");
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0], "key handler at ac_five.py:5, released by the host");
}

TEST_F(Acquisitions, AFailedReloadLeavesExactlyTheOldRegistrationAndNothingNew) {
  write("ac_fail.py", plugin(1));
  auto module = import("ac_fail");
  py::object old_handler = module.attr("handler");
  write("ac_fail.py", plugin(2, "cpp_host.register('extra', handler)\nraise RuntimeError('broken')\n"));
  auto report = cache().reload("ac_fail");
  ASSERT_EQ(report.outcome, reload_outcome::failed);
  EXPECT_EQ(host_.keys(), std::vector<std::string>{"handler"});
  EXPECT_TRUE(host_.items.at("handler").is(old_handler));
  EXPECT_EQ(fire("handler"), 1);
  EXPECT_EQ(host_.log, (std::vector<std::string>{"+handler", "-handler", "+handler", "+extra", "-extra",
                                                 "-handler", "+handler"}));
  EXPECT_TRUE(report.acquisition_errors.empty());
}

TEST_F(Acquisitions, AFailingDependentRestoresTheTargetsRegistrationsToo) {
  write("ac_lib.py", "import cpp_host\ndef lib():\n    return 1\ncpp_host.register('lib', lib)\n");
  write("ac_app.py", "import ac_lib, cpp_host\ndef app():\n    return 1\ncpp_host.register('app', app)\n");
  import("ac_app");
  auto before = host_.items;
  write("ac_lib.py", "import cpp_host\ndef lib():\n    return 2\ncpp_host.register('lib', lib)\n");
  write("ac_app.py", "import ac_lib, cpp_host\ndef app():\n    return 2\ncpp_host.register('app', app)\n"
                     "raise ValueError('app v2')\n");
  modhost::reload_options options;
  options.dependents = true;
  auto report = cache().reload("ac_lib", options);
  ASSERT_EQ(report.outcome, reload_outcome::failed);
  EXPECT_EQ(report.failed_module, "ac_app");
  ASSERT_EQ(host_.keys(), (std::vector<std::string>{"app", "lib"}));
  for (const auto& [key, value] : before) EXPECT_TRUE(host_.items.at(key).is(value)) << key;
  EXPECT_EQ(fire("lib"), 1);
}

TEST_F(Acquisitions, UnloadLeavesNothingRegisteredAndNoThreadRunning) {
  write("ac_unload.py", plugin(1, "cpp_host.start_ticker('t')\n"));
  import("ac_unload");
  EXPECT_EQ(host_.tickers_running(), 1);
  auto report = cache().unload("ac_unload");
  EXPECT_TRUE(report.freed);
  EXPECT_TRUE(host_.items.empty());
  EXPECT_EQ(host_.tickers_running(), 0);
  EXPECT_THROW(modhost::acquired(cache(), "ac_unload"), python_error);
}

TEST_F(Acquisitions, AThreadIsStoppedBeforeTheNewCodeStartsAnother) {
  write("ac_ticker.py", "import cpp_host\ncpp_host.start_ticker('t')\nVERSION = 1\n");
  import("ac_ticker");
  for (int version = 2; version <= 4; ++version) {
    write("ac_ticker.py", "import cpp_host\ncpp_host.start_ticker('t')\nVERSION = " + std::to_string(version) + "\n");
    auto report = cache().reload("ac_ticker");
    ASSERT_EQ(report.outcome, reload_outcome::reloaded);
    EXPECT_EQ(host_.tickers_running(), 1);
  }
  EXPECT_EQ(host_.most_tickers_at_once(), 1);
  (void)cache().unload("ac_ticker");
  EXPECT_EQ(host_.tickers_running(), 0);
}

TEST_F(Acquisitions, AReleaseThatThrowsDoesNotSkipTheOthers) {
  write("ac_throws.py", "import cpp_host\ncpp_host.register('a', 1)\ncpp_host.release_raises('b')\n"
                        "cpp_host.register('c', 3)\n");
  import("ac_throws");
  exec("import sys\n_unraisable = []\n_previous_hook = sys.unraisablehook\nsys.unraisablehook = _unraisable.append\n");
  auto report = cache().unload("ac_throws");
  exec("sys.unraisablehook = _previous_hook\n");
  EXPECT_EQ(host_.keys(), std::vector<std::string>{"b"});  // its release failed; the others ran
  EXPECT_EQ(host_.log, (std::vector<std::string>{"+a", "+b", "+c", "-c", "-a"}));
  ASSERT_EQ(report.acquisition_errors.size(), 1u);
  EXPECT_NE(report.acquisition_errors[0].find("RuntimeError: cannot release b"), std::string::npos)
      << report.acquisition_errors[0];
  EXPECT_EQ(eval("len(_unraisable)").cast<int>(), 1);
}

TEST_F(Acquisitions, ACallFromCodeOfNoTrackedModuleIsAValueErrorAndChangesNothing) {
  try {
    exec("import cpp_host\nexec(\"cpp_host.register('stray', 1)\", {'__name__': 'nowhere', 'cpp_host': cpp_host})\n");
    FAIL() << "no ValueError";
  } catch (py::error_already_set& e) {
    EXPECT_TRUE(e.matches(PyExc_ValueError)) << e.what();
    EXPECT_NE(std::string(e.what()).find("no tracked module"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(host_.items.empty());
  try {
    modhost::attach_release(cache(), "from C++", [] {}, [] {});  // no Python code is calling
    FAIL() << "no ValueError";
  } catch (const python_error& e) {
    EXPECT_EQ(e.type_name(), "ValueError");
  }
}

TEST_F(Acquisitions, ModuleNamesTheOwnerOfAnAcquisitionMadeFromCpp) {
  write("ac_named.py", "VERSION = 1\n");
  import("ac_named");
  int released = 0;
  modhost::attach_release(cache(), "counter", [] {}, [&] { ++released; }, "ac_named");
  EXPECT_EQ(modhost::acquired(cache(), "ac_named"), std::vector<std::string>{"counter at <C++>, released by the host"});
  write("ac_named.py", "VERSION = 2\n");
  ASSERT_EQ(cache().reload("ac_named").outcome, reload_outcome::reloaded);
  EXPECT_EQ(released, 1);
  EXPECT_TRUE(modhost::acquired(cache(), "ac_named").empty());
}
