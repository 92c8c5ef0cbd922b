// The `flushbench run` flags, made from the option table (options.h).
#pragma once

#include <initializer_list>
#include <string_view>

#include "host/run/options.h"

namespace CLI {
class App;
}

namespace fb {

// Adds the table's rows with a flag of their own to `app` (all, or those in `only`), writing into `o`.
void add_run_options(CLI::App& app, RunOptions& o, std::initializer_list<std::string_view> only = {});

// The flags given on the command line, copied from `given` into `o` (a matrix run: flags override it).
void override_given(const CLI::App& run, const RunOptions& given, RunOptions& o);

}  // namespace fb
