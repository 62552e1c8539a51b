// modhost_benchmarks — the module cache beside what plain CPython offers.
//
// One interpreter for the whole process (CPython cannot be restarted); the
// main thread holds the GIL, so every benchmark is single-threaded and calls
// Python directly. Fixtures are real .py files in a temp dir on sys.path.
//
//   find_hit/*        a loaded module from C++: cache.find vs PyImport_GetModule
//                     vs PyImport_ImportModule
//   reload_unchanged/*  an unchanged ~170-line module: cache.reload (with and without
//                       holding other threads out) vs importlib.reload
//                     (with and without a __pycache__ file)
//   is_changed/*      cache.is_changed on an unchanged file vs one stat()
//   referrers/*       cache.referrers with 500, 1,000 and 2,000 extra modules loaded
//   deep_reload_instances/*  deep reload of a changed ~170-line module with 0 and
//                     100,000 live instances of its classes held
//   reload_changed/*  a changed ~170-line module: deep reload vs plain (atomic) reload
//   handle_call/*     calling a trivial script function: function_handle vs a cached
//                     py::object vs looking the attribute up for every call
//   live_poll/*, live_reload_latency/*  autoreload: see live_reload_benchmark.cpp
#include <benchmark/benchmark.h>
#include <pybind11/embed.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <string>

#include "interpreter/interpreter.h"
#include "modules/module_cache.h"
#include "bench_common.h"

namespace py = pybind11;

namespace {

// ---------------------------------------------------------------------------
// Fixture files

// A realistic plugin: imports, constants, a dataclass, an enum, three classes
// and fifteen functions (about 170 lines).
constexpr const char* kPluginSource = R"PY("""Order routing plugin: the kind of module a host reloads while it runs."""
from __future__ import annotations

import enum
import json
import math
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional

VERSION = "2.4.1"
DEFAULT_VENUE = "XNAS"
MAX_ORDER_QTY = 1_000_000
TICK_SIZE = 0.01
FEE_BPS = 0.35
VENUES = ("XNAS", "XNYS", "ARCX", "BATS", "IEXG")
SYMBOL_RE = re.compile(r"^[A-Z]{1,5}(\.[A-Z])?$")
LIMITS: Dict[str, int] = {"XNAS": 500_000, "XNYS": 400_000, "ARCX": 250_000}


class Side(enum.Enum):
    BUY = "buy"
    SELL = "sell"


class RoutingError(RuntimeError):
    """A route that cannot be taken."""


@dataclass
class Order:
    symbol: str
    side: Side
    qty: int
    price: float
    venue: str = DEFAULT_VENUE
    tags: List[str] = field(default_factory=list)

    def notional(self) -> float:
        return self.qty * self.price

    def is_marketable(self, best: float) -> bool:
        return self.price >= best if self.side is Side.BUY else self.price <= best


class Book:
    """A tiny price-level book."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.bids: Dict[float, int] = {}
        self.asks: Dict[float, int] = {}

    def add(self, order: Order) -> None:
        levels = self.bids if order.side is Side.BUY else self.asks
        levels[order.price] = levels.get(order.price, 0) + order.qty

    def best_bid(self) -> Optional[float]:
        return max(self.bids) if self.bids else None

    def best_ask(self) -> Optional[float]:
        return min(self.asks) if self.asks else None

    def spread(self) -> Optional[float]:
        bid, ask = self.best_bid(), self.best_ask()
        if bid is None or ask is None:
            return None
        return round(ask - bid, 6)


class Router:
    """Chooses a venue for each order."""

    def __init__(self, venues: Iterable[str] = VENUES) -> None:
        self.venues = list(venues)
        self.sent: List[Order] = []

    def route(self, order: Order) -> str:
        validate(order)
        venue = choose_venue(order, self.venues)
        order.venue = venue
        self.sent.append(order)
        return venue

    def stats(self) -> Dict[str, int]:
        counts: Dict[str, int] = {}
        for order in self.sent:
            counts[order.venue] = counts.get(order.venue, 0) + 1
        return counts


def round_to_tick(price: float, tick: float = TICK_SIZE) -> float:
    return round(math.floor(price / tick + 0.5) * tick, 6)


def valid_symbol(symbol: str) -> bool:
    return bool(SYMBOL_RE.match(symbol))


def validate(order: Order) -> None:
    if not valid_symbol(order.symbol):
        raise RoutingError(f"bad symbol {order.symbol!r}")
    if not 0 < order.qty <= MAX_ORDER_QTY:
        raise RoutingError(f"bad quantity {order.qty}")
    if order.price <= 0:
        raise RoutingError(f"bad price {order.price}")


def venue_limit(venue: str) -> int:
    return LIMITS.get(venue, 100_000)


def choose_venue(order: Order, venues: List[str]) -> str:
    for venue in venues:
        if order.qty <= venue_limit(venue):
            return venue
    return DEFAULT_VENUE


def fee(order: Order) -> float:
    return order.notional() * FEE_BPS / 10_000


def split(order: Order, parts: int) -> List[Order]:
    base, extra = divmod(order.qty, parts)
    return [Order(order.symbol, order.side, base + (1 if i < extra else 0), order.price)
            for i in range(parts)]


def vwap(fills: Iterable[tuple]) -> float:
    qty = sum(q for q, _ in fills)
    return sum(q * p for q, p in fills) / qty if qty else 0.0


def parse_order(text: str) -> Order:
    data = json.loads(text)
    return Order(data["symbol"], Side(data["side"]), int(data["qty"]), float(data["price"]))


def dump_order(order: Order) -> str:
    return json.dumps({"symbol": order.symbol, "side": order.side.value,
                       "qty": order.qty, "price": order.price, "venue": order.venue})


def aggregate(orders: Iterable[Order]) -> Dict[str, float]:
    totals: Dict[str, float] = {}
    for order in orders:
        totals[order.symbol] = totals.get(order.symbol, 0.0) + order.notional()
    return totals


def mid(book: Book) -> Optional[float]:
    bid, ask = book.best_bid(), book.best_ask()
    return None if bid is None or ask is None else (bid + ask) / 2


def slippage(order: Order, fill_price: float) -> float:
    sign = 1 if order.side is Side.BUY else -1
    return sign * (fill_price - order.price) * order.qty


def describe(order: Order) -> str:
    return f"{order.side.value} {order.qty} {order.symbol} @ {order.price:.2f} on {order.venue}"


def on_event(event: dict) -> Optional[str]:
    if event.get("type") != "order":
        return None
    return Router().route(parse_order(json.dumps(event["order"])))


_default_router = Router()
)PY";

// The 2,000 small modules of the referrers benchmark: a couple of globals,
// functions, sometimes a class; some import earlier ones.
std::string small_module(int i) {
  auto name = [](int k) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "bm_ref_%04d", k);
    return std::string(buffer);
  };
  std::string text = "\"\"\"Small module " + std::to_string(i) + ".\"\"\"\n";
  if (i > 0 && i % 3 == 0) text += "import " + name(i / 2) + "\n";
  if (i > 0 && i % 5 == 0) text += "from " + name(i - 1) + " import compute\n";
  text += "INDEX = " + std::to_string(i) + "\n";
  text += "NAMES = ['a', 'b', 'c']\n";
  text += "def compute(x):\n    return x * INDEX + len(NAMES)\n";
  text += "def describe():\n    return f'module {INDEX}'\n";
  if (i % 4 == 1) text += "class Item:\n    def __init__(self, v):\n        self.v = v\n\nDEFAULT = Item(INDEX)\n";
  return text;
}

using namespace modhost_bench;

// ---------------------------------------------------------------------------
// 1. A loaded module from C++

constexpr const char* kHitModule = "bench_plugin";

void find_hit_cache_find(benchmark::State& state) {
  guarded(state, [&] {
    cache().load(kHitModule);
    const std::string name = kHitModule;
    if (!cache().find(name)) throw std::runtime_error("bench_plugin not in the cache");
    for (auto _ : state) {
      py::object module = cache().find(name);
      benchmark::DoNotOptimize(module.ptr());
    }
  });
}

void find_hit_pyimport_getmodule(benchmark::State& state) {
  guarded(state, [&] {
    cache().load(kHitModule);
    py::str name(kHitModule);
    for (auto _ : state) {
      PyObject* module = PyImport_GetModule(name.ptr());  // new reference
      benchmark::DoNotOptimize(module);
      Py_XDECREF(module);
    }
  });
}

void find_hit_pyimport_importmodule(benchmark::State& state) {
  guarded(state, [&] {
    cache().load(kHitModule);
    for (auto _ : state) {
      PyObject* module = PyImport_ImportModule(kHitModule);  // new reference
      if (!module) throw py::error_already_set();
      benchmark::DoNotOptimize(module);
      Py_DECREF(module);
    }
  });
}

// ---------------------------------------------------------------------------
// 2. Reload of an unchanged module (copies of the same source, so one
// benchmark's state cannot help or hinder another). importlib.reload is
// measured at its best, with a valid __pycache__ file to load instead of
// compiling (main() makes sure bytecode is written even when the environment
// sets PYTHONDONTWRITEBYTECODE), and, for information, without one, as in a
// host that never writes bytecode. cache.reload compiles from source once and
// then reuses the code object while the fingerprint is unchanged.

void run_cache_reload(benchmark::State& state, const std::string& name, const modhost::reload_options& options) {
  guarded(state, [&] {
    cache().load(name);
    for (auto _ : state) {
      modhost::reload_report report = cache().reload(name, options);
      if (!report) throw std::runtime_error("reload failed: " + std::string(report.error->what()));
      benchmark::DoNotOptimize(report.generation);
    }
  });
}

void reload_cache(benchmark::State& state) { run_cache_reload(state, "bench_reload_cache", {}); }

// The same without holding other threads out (reload_options::wait_for_calls
// unset): what the call gate costs a reload.
void reload_cache_unheld(benchmark::State& state) {
  modhost::reload_options options;
  options.wait_for_calls = std::nullopt;
  run_cache_reload(state, "bench_reload_cache_unheld", options);
}

void run_importlib_reload(benchmark::State& state, const std::string& name, bool expect_bytecode) {
  py::object module = cache().load(name);
  auto cached = py::module_::import("importlib.util")
                    .attr("cache_from_source")((g_dir->path() / (name + ".py")).string())
                    .cast<std::string>();
  if (std::filesystem::exists(cached) != expect_bytecode)
    throw std::runtime_error(name + (expect_bytecode ? ": no" : ": unexpected") + " bytecode cache " + cached);
  py::object reload = py::module_::import("importlib").attr("reload");
  for (auto _ : state) {
    py::object result = reload(module);
    benchmark::DoNotOptimize(result.ptr());
  }
}

void reload_importlib(benchmark::State& state) {
  guarded(state, [&] {
    run_importlib_reload(state, "bench_reload_importlib", true);
  });
}

void reload_importlib_no_bytecode(benchmark::State& state) {
  guarded(state, [&] {
    py::module_ sys = py::module_::import("sys");
    sys.attr("dont_write_bytecode") = true;
    try {
      run_importlib_reload(state, "bench_reload_importlib_nopyc", false);
    } catch (...) {
      sys.attr("dont_write_bytecode") = false;
      throw;
    }
    sys.attr("dont_write_bytecode") = false;
  });
}

// ---------------------------------------------------------------------------
// 3. Change detection on an unchanged file

void is_changed_cache(benchmark::State& state) {
  guarded(state, [&] {
    cache().load(kHitModule);
    const std::string name = kHitModule;
    if (cache().is_changed(name)) throw std::runtime_error("bench_plugin reported changed");
    for (auto _ : state) {
      bool changed = cache().is_changed(name);
      benchmark::DoNotOptimize(changed);
    }
  });
}

void is_changed_stat(benchmark::State& state) {
  const std::string file = (g_dir->path() / "bench_plugin.py").string();
  for (auto _ : state) {
    struct stat st {};
    int rc = ::stat(file.c_str(), &st);
    benchmark::DoNotOptimize(rc);
    benchmark::DoNotOptimize(st.st_mtim);
  }
}

// ---------------------------------------------------------------------------
// 4. referrers() as the number of loaded modules grows (run with increasing
// Args: the modules imported for 500 stay for 1,000 and 2,000)

void referrers_cache(benchmark::State& state) {
  guarded(state, [&] {
    for (int i = 0; i < state.range(0); ++i) {
      char name[32];
      std::snprintf(name, sizeof name, "bm_ref_%04d", i);
      cache().load(name);
    }
    // The queried module: bm_ref_0003 holds it as a global (`import`); it
    // defines a class, so the scan also looks for instances heap-wide.
    const std::string target = "bm_ref_0001";
    std::size_t found = cache().referrers(target).size();
    const double loaded = static_cast<double>(PyDict_Size(PyImport_GetModuleDict()));
    for (auto _ : state) {
      auto holders = cache().referrers(target);
      benchmark::DoNotOptimize(holders.data());
    }
    state.counters["sys_modules"] = loaded;
    state.counters["referrers"] = static_cast<double>(found);
    // Seconds per module in sys.modules (shown inverted: time per module).
    state.counters["per_module"] =
        benchmark::Counter(loaded, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  });
}

// ---------------------------------------------------------------------------
// 5. Reload of a changed module. A deep reload of an unchanged file is a
// no-op, so every iteration first writes a new version of the file (outside
// the timed region): the plugin source plus a REVISION string that differs
// every time. Consecutive versions also differ in size, so the stat
// fingerprint changes even when two writes land in the same tick of the
// file system's clock (same mtime_ns) and the cache takes the change path.

class changing_source {
 public:
  explicit changing_source(std::string module) : module_(std::move(module)) {}
  void write_next() {
    char line[64];
    std::snprintf(line, sizeof line, "\nREVISION = \"%010" PRIu64 "\"%s\n", counter_,
                  counter_ % 2 ? "  # odd" : "");
    ++counter_;
    g_dir->write(module_ + ".py", std::string(kPluginSource) + line);
  }

 private:
  std::string module_;
  // Shared by every benchmark (repetitions run the same module on): each write differs from the last.
  static std::uint64_t counter_;
};
std::uint64_t changing_source::counter_ = 1;

// Reloads `name` each iteration after writing a new version of its file;
// fails the benchmark unless every reload really ran the new code.
void run_changed_reload(benchmark::State& state, const std::string& name, bool deep) {
  changing_source source(name);
  modhost::reload_options options;
  options.deep = deep;
  std::size_t patched = 0, not_patched = 0;
  for (auto _ : state) {
    state.PauseTiming();
    source.write_next();
    state.ResumeTiming();
    modhost::reload_report report = cache().reload(name, options);
    if (report.outcome != modhost::reload_outcome::reloaded) {
      state.SkipWithError((name + ": reload outcome " + modhost::to_string(report.outcome) +
                           (report.error ? std::string(": ") + report.error->what() : std::string()))
                              .c_str());
      break;
    }
    patched = report.patched.size();
    not_patched = report.not_patched.size();
    benchmark::DoNotOptimize(report.generation);
  }
  // What the last deep reload updated in place and rebound instead (the
  // dataclass's __repr__, a reprlib.recursive_repr closure over a fresh set,
  // is always rebound).
  if (deep) {
    state.counters["patched"] = static_cast<double>(patched);
    state.counters["not_patched"] = static_cast<double>(not_patched);
  }
}

// Instances of the plugin's classes (Order, Book, Router in turn).
py::list make_instances(const py::object& module, std::int64_t count) {
  py::dict scope;
  scope["m"] = module;
  scope["count"] = count;
  py::exec(R"PY(
instances = []
for i in range(count):
    kind = i % 3
    if kind == 0:
        instances.append(m.Order("AAPL", m.Side.BUY, i % 1000 + 1, 100.0 + i % 50))
    elif kind == 1:
        instances.append(m.Book("MSFT"))
    else:
        instances.append(m.Router())
)PY", scope);
  return scope["instances"];
}

constexpr std::int64_t kLiveInstances = 100000;

std::string deep_instances_module(std::int64_t instances) {
  return "bench_deep_instances_" + std::to_string(instances);
}

// Deep reload with state.range(0) live instances of the module's classes,
// held by C++ for the whole benchmark. The classes are updated in place, so
// the instances should cost nothing.
void deep_reload_instances(benchmark::State& state) {
  guarded(state, [&] {
    const std::string name = deep_instances_module(state.range(0));
    py::object module = cache().load(name);
    py::list instances = make_instances(module, state.range(0));
    py::object order_class = module.attr("Order");
    py::module_::import("gc").attr("collect")();  // start both variants from a clean heap
    run_changed_reload(state, name, true);
    // The classes kept their identity: the instances are still of the module's classes.
    py::object order_now = module.attr("Order");
    if (!order_now.is(order_class))
      throw std::runtime_error(name + ": Order was replaced, not updated in place");
    if (instances.size() && !py::type::handle_of(instances[0]).is(order_now))
      throw std::runtime_error(name + ": instances left on an old class");
    state.counters["instances"] = static_cast<double>(instances.size());
  });
}

void reload_changed_plain(benchmark::State& state) {
  guarded(state, [&] {
    cache().load("bench_changed_plain");
    py::module_::import("gc").attr("collect")();
    run_changed_reload(state, "bench_changed_plain", false);
  });
}

void reload_changed_deep(benchmark::State& state) {
  guarded(state, [&] {
    cache().load("bench_changed_deep");
    py::module_::import("gc").attr("collect")();
    run_changed_reload(state, "bench_changed_deep", true);
  });
}

// ---------------------------------------------------------------------------
// 6. Calling a script function from C++: def fn(x): return x

constexpr const char* kHandleModule = "bench_handle";
constexpr const char* kHandleSource = "def fn(x):\n    return x\n";

void handle_call_function_handle(benchmark::State& state) {
  guarded(state, [&] {
    cache().load(kHandleModule);
    modhost::function_handle fn(cache(), kHandleModule, "fn");
    py::int_ arg(42);
    if (!fn(arg).is(arg)) throw std::runtime_error("fn(x) did not return x");
    for (auto _ : state) {
      py::object result = fn(arg);
      benchmark::DoNotOptimize(result.ptr());
    }
  });
}

void handle_call_cached_object(benchmark::State& state) {
  guarded(state, [&] {
    py::object module = cache().load(kHandleModule);
    py::object fn = module.attr("fn");
    py::int_ arg(42);
    for (auto _ : state) {
      py::object result = fn(arg);
      benchmark::DoNotOptimize(result.ptr());
    }
  });
}

void handle_call_attr_per_call(benchmark::State& state) {
  guarded(state, [&] {
    py::object module = cache().load(kHandleModule);
    py::int_ arg(42);
    for (auto _ : state) {
      py::object result = module.attr("fn")(arg);
      benchmark::DoNotOptimize(result.ptr());
    }
  });
}

void register_benchmarks() {
  benchmark::RegisterBenchmark("find_hit/modhost_cache_find", find_hit_cache_find);
  benchmark::RegisterBenchmark("find_hit/PyImport_GetModule", find_hit_pyimport_getmodule);
  benchmark::RegisterBenchmark("find_hit/PyImport_ImportModule", find_hit_pyimport_importmodule);
  benchmark::RegisterBenchmark("reload_unchanged/modhost_cache_reload", reload_cache)
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("reload_unchanged/modhost_cache_reload_unheld", reload_cache_unheld)
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("reload_unchanged/importlib_reload", reload_importlib)
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("reload_unchanged/importlib_reload_no_bytecode", reload_importlib_no_bytecode)
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("is_changed/modhost_cache_is_changed", is_changed_cache);
  benchmark::RegisterBenchmark("is_changed/stat", is_changed_stat);
  benchmark::RegisterBenchmark("referrers/modhost_cache_referrers", referrers_cache)
      ->Arg(500)
      ->Arg(1000)
      ->Arg(kMaxReferrerModules)
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("deep_reload_instances/modhost_cache_reload_deep", deep_reload_instances)
      ->Arg(0)
      ->Arg(kLiveInstances)
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("reload_changed/modhost_cache_reload", reload_changed_plain)
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("reload_changed/modhost_cache_reload_deep", reload_changed_deep)
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("handle_call/function_handle", handle_call_function_handle);
  benchmark::RegisterBenchmark("handle_call/cached_py_object", handle_call_cached_object);
  benchmark::RegisterBenchmark("handle_call/attr_lookup_per_call", handle_call_attr_per_call);
}

}  // namespace

const char* modhost_bench::plugin_source() { return kPluginSource; }

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  try {
    temp_dir dir;
    g_dir = &dir;
    dir.write("bench_plugin.py", kPluginSource);
    dir.write("bench_reload_cache.py", kPluginSource);
    dir.write("bench_reload_cache_unheld.py", kPluginSource);
    dir.write("bench_reload_importlib.py", kPluginSource);
    dir.write("bench_reload_importlib_nopyc.py", kPluginSource);
    for (std::int64_t instances : {std::int64_t{0}, kLiveInstances})
      dir.write(deep_instances_module(instances) + ".py", kPluginSource);
    dir.write("bench_changed_plain.py", kPluginSource);
    dir.write("bench_changed_deep.py", kPluginSource);
    dir.write(std::string(kHandleModule) + ".py", kHandleSource);
    for (int i = 0; i < kMaxReferrerModules; ++i) {
      char file[32];
      std::snprintf(file, sizeof file, "bm_ref_%04d.py", i);
      dir.write(file, small_module(i));
    }

    modhost::interpreter_config config;
    config.argv = {"modhost_benchmarks"};
    config.module_paths = {dir.path()};
    modhost::interpreter python(config);
    py::module_::import("importlib").attr("invalidate_caches")();
    // Python's default: imports write __pycache__ files (the environment may
    // say otherwise; importlib.reload is compared at its best).
    py::module_::import("sys").attr("dont_write_bytecode") = false;

    register_benchmarks();
    register_live_reload_benchmarks();
    register_startup_benchmarks();
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    g_dir = nullptr;
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "modhost_benchmarks: " << e.what() << std::endl;
    return 1;
  }
}
