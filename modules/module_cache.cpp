#include "modules/module_cache.h"
