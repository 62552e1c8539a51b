// detail::uncounted_references and holders_among: how a deep reload tells
// that the holders it knows of account for every reference to a class.
#include <gtest/gtest.h>
#include <pybind11/embed.h>

#include "modules/internal/reference_counts.h"

namespace py = pybind11;
using modhost::detail::holders_among;
using modhost::detail::uncounted_references;

namespace {

// A kept object, held by the namespace, a list and a registry dict.
struct scene {
  py::dict ns;
  py::list objects;  // [obj], as a deep reload passes its discarded classes

  scene() {
    py::exec("class Obj: pass\nobj = Obj()\nbox = [obj]\nregistry = {'k': obj}\nother = [1, 'x']\n", ns);
    objects.append(ns["obj"]);
  }
  py::list holders(std::initializer_list<const char*> names) {
    py::list out;
    out.append(objects);
    for (const char* name : names) out.append(name == std::string("ns") ? py::object(ns) : py::object(ns[name]));
    return out;
  }
};

}  // namespace

TEST(ReferenceCounts, AReferenceFromAnUnlistedHolderIsUncounted) {
  scene s;
  EXPECT_EQ(uncounted_references(s.objects, s.holders({"ns", "box"}))[0].cast<long>(), 1);  // the registry's
  EXPECT_EQ(uncounted_references(s.objects, s.holders({"ns", "box", "registry"}))[0].cast<long>(), 0);
}

TEST(ReferenceCounts, AHolderListedTwiceIsCountedOnce) {
  scene s;
  py::list holders = s.holders({"ns", "box", "box", "registry"});
  EXPECT_EQ(uncounted_references(s.objects, holders)[0].cast<long>(), 0);
  py::list missing_registry = s.holders({"ns", "box", "box"});
  EXPECT_EQ(uncounted_references(s.objects, missing_registry)[0].cast<long>(), 1);
}

TEST(ReferenceCounts, AHolderEntryOfTheObjectItselfCountsAsAReference) {
  scene s;
  py::list holders = s.holders({"ns", "box", "registry"});
  holders.append(s.ns["obj"]);  // as a deep reload lists the classes among the holders
  EXPECT_EQ(uncounted_references(s.objects, holders)[0].cast<long>(), 0);
}

TEST(ReferenceCounts, HoldersAmongAreTheDistinctHoldersThatReferenceAnObjectInOrder) {
  scene s;
  py::list holders = s.holders({"other", "registry", "box", "registry", "ns"});
  holders.append(py::int_(7));  // not tracked by the collector: holds nothing
  py::list ignored;
  ignored.append(s.objects);
  py::list found = holders_among(holders, s.objects, ignored);
  ASSERT_EQ(found.size(), 3u);
  EXPECT_TRUE(py::object(found[0]).is(s.ns["registry"]));
  EXPECT_TRUE(py::object(found[1]).is(s.ns["box"]));
  EXPECT_TRUE(py::object(found[2]).is(s.ns));
}
