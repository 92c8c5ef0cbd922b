#include "host/run/options_cli.h"

#include <algorithm>
#include <string>
#include <type_traits>

#include <CLI/CLI.hpp>

namespace fb {

namespace {

std::string fmt_percent(uint32_t permille) {
    std::string s = std::to_string(permille / 10);
    if (permille % 10) s += "." + std::to_string(permille % 10);
    return s;
}

}  // namespace

void add_run_options(CLI::App& run, RunOptions& o, std::initializer_list<std::string_view> only) {
    for (const auto& row : run_option_table()) {
        if (!row.flag || row.own_cli) continue;
        if (only.size() && std::find(only.begin(), only.end(), std::string_view(row.flag)) == only.end()) continue;
        CLI::Option* opt = std::visit(
            [&](auto ptr) -> CLI::Option* {
                auto& field = o.*ptr;
                using T = std::decay_t<decltype(field)>;
                if constexpr (std::is_same_v<T, Backend>) {
                    return run.add_option_function<std::string>(row.flag, [&field](const std::string& s) { field = *backend_from_string(s); },
                                                                row.help)
                        ->check(CLI::IsMember(backend_names()))
                        ->default_str(std::string(to_string(field)));
                } else if constexpr (std::is_same_v<T, Mode>) {
                    return run.add_option_function<std::string>(row.flag, [&field](const std::string& s) { field = *mode_from_string(s); },
                                                                row.help)
                        ->check(CLI::IsMember(mode_names()))
                        ->default_str(std::string(to_string(field)));
                } else if constexpr (std::is_same_v<T, std::chrono::seconds>) {
                    return run.add_option_function<int>(row.flag, [&field](int s) { field = std::chrono::seconds(s); }, row.help)
                        ->default_str(std::to_string(field.count()));
                } else if constexpr (std::is_same_v<T, uint32_t>) {
                    if (row.scale == RunOption::Scale::permille_as_percent)
                        return run.add_option_function<double>(row.flag, [&field](double pct) { field = uint32_t(pct * 10.0 + 0.5); }, row.help)
                            ->default_str(fmt_percent(field));
                    return run.add_option(row.flag, field, row.help)->capture_default_str();
                } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
                    CLI::Option* list = run.add_option(row.flag, field, row.help)->delimiter(',');
                    return field.empty() ? list : list->capture_default_str();  // no "=[]" in --help
                } else {
                    return run.add_option(row.flag, field, row.help)->capture_default_str();
                }
            },
            row.member);
        if (row.lo < row.hi) opt->check(CLI::Range(row.lo, row.hi));
        if (row.choices) {
            std::vector<std::string> words;
            std::string all = row.choices;
            for (size_t start = 0, comma; start <= all.size(); start = comma + 1) {
                comma = all.find(',', start);
                if (comma == std::string::npos) comma = all.size();
                words.push_back(all.substr(start, comma - start));
            }
            opt->check(CLI::IsMember(words));
        }
        if (row.hidden) opt->group("");
    }
}

void override_given(const CLI::App& run, const RunOptions& given, RunOptions& o) {
    for (const auto& row : run_option_table()) {
        if (!row.flag || row.own_cli || run.count(row.flag) == 0) continue;
        std::visit([&](auto ptr) { o.*ptr = given.*ptr; }, row.member);
    }
}

}  // namespace fb
