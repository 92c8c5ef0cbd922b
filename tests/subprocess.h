// Test support: run the real flushbench binary as a subprocess (stdout and stderr on pipes, read
// with poll so a test can watch progress and signal the child mid-run, a hard deadline so a wedged
// child fails the test instead of hanging it), plus the host facts tests skip on.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

extern char** environ;

namespace fb::testing {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct ProcResult {
    int code = -1;          // exit status, or 128 + signal when killed by a signal
    bool signaled = false;
    bool timed_out = false;  // we killed it at the deadline
    std::string out, err;
};

class Child {
public:
    // env_overrides: NAME -> value, replacing (or adding) those variables in the child's environment.
    explicit Child(const std::vector<std::string>& args, const std::map<std::string, std::string>& env_overrides = {}) {
        std::vector<std::string> env;
        for (char** e = environ; e && *e; ++e) {
            std::string kv = *e;
            std::string name = kv.substr(0, kv.find('='));
            if (!env_overrides.count(name)) env.push_back(kv);
        }
        for (const auto& [k, v] : env_overrides) env.push_back(k + "=" + v);
        // Everything the child needs is built before fork: after it only async-signal-safe calls.
        std::vector<std::string> argv_s = args, env_s = env;
        std::vector<char*> argv, envp;
        for (auto& s : argv_s) argv.push_back(s.data());
        argv.push_back(nullptr);
        for (auto& s : env_s) envp.push_back(s.data());
        envp.push_back(nullptr);

        int out_pipe[2], err_pipe[2];
        if (pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0) {
            ADD_FAILURE() << "pipe2: " << strerror(errno);
            return;
        }
        pid_ = fork();
        if (pid_ == 0) {
            setpgid(0, 0);  // our own group: a terminal's Ctrl-C does not reach it, we signal it ourselves
            sigset_t none;
            sigemptyset(&none);
            sigprocmask(SIG_SETMASK, &none, nullptr);
            signal(SIGINT, SIG_DFL);
            signal(SIGPIPE, SIG_DFL);
            int devnull = open("/dev/null", O_RDONLY);
            dup2(devnull, 0);
            dup2(out_pipe[1], 1);
            dup2(err_pipe[1], 2);
            execve(argv[0], argv.data(), envp.data());
            _exit(127);
        }
        close(out_pipe[1]);
        close(err_pipe[1]);
        if (pid_ < 0) {
            ADD_FAILURE() << "fork: " << strerror(errno);
            close(out_pipe[0]);
            close(err_pipe[0]);
            return;
        }
        fds_[0] = out_pipe[0];
        fds_[1] = err_pipe[0];
    }

    ~Child() {
        if (pid_ > 0 && !reaped_) {
            kill(pid_, SIGKILL);
            int st;
            waitpid(pid_, &st, 0);
        }
        for (int& fd : fds_)
            if (fd >= 0) close(fd);
    }
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;

    pid_t pid() const { return pid_; }
    const std::string& err() const { return res_.err; }

    // Reads output until `done(stderr so far)` holds, both pipes close, or the deadline passes.
    // Returns whether `done` held.
    bool pump_until(const std::function<bool(const std::string&)>& done, std::chrono::milliseconds limit) {
        auto deadline = Clock::now() + limit;
        while (true) {
            if (done && done(res_.err)) return true;
            if (fds_[0] < 0 && fds_[1] < 0) return false;
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
            if (left <= 0ms) return false;
            pollfd p[2] = {{fds_[0], POLLIN, 0}, {fds_[1], POLLIN, 0}};
            int n = poll(p, 2, int(std::min<long long>(left.count(), 100)));
            if (n < 0 && errno != EINTR) return false;
            for (int i = 0; i < 2; ++i) {
                if (fds_[i] < 0 || !(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
                char buf[65536];
                ssize_t got = read(fds_[i], buf, sizeof buf);
                if (got <= 0) {
                    close(fds_[i]);
                    fds_[i] = -1;
                    continue;
                }
                (i == 0 ? res_.out : res_.err).append(buf, size_t(got));
            }
        }
    }

    void send(int sig) {
        if (pid_ > 0 && !reaped_) kill(pid_, sig);
    }

    // Reads everything and reaps the child; kills it when it outlives `limit`.
    ProcResult finish(std::chrono::milliseconds limit) {
        if (pid_ <= 0) return res_;
        pump_until(nullptr, limit);
        if (fds_[0] >= 0 || fds_[1] >= 0) {
            res_.timed_out = true;
            kill(pid_, SIGKILL);
            pump_until(nullptr, 5s);
        }
        int st = 0;
        while (waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
        }
        reaped_ = true;
        if (WIFEXITED(st)) res_.code = WEXITSTATUS(st);
        if (WIFSIGNALED(st)) res_.signaled = true, res_.code = 128 + WTERMSIG(st);
        return res_;
    }

private:
    pid_t pid_ = -1;
    bool reaped_ = false;
    int fds_[2] = {-1, -1};
    ProcResult res_;
};

inline ProcResult run_cmd(const std::vector<std::string>& args, std::chrono::milliseconds limit = 60s,
                   const std::map<std::string, std::string>& env = {}) {
    Child c(args, env);
    return c.finish(limit);
}

inline std::string describe(const std::vector<std::string>& args, const ProcResult& r) {
    std::string s = "command:";
    for (const auto& a : args) s += " " + a;
    s += "\nexit: " + std::to_string(r.code) + (r.signaled ? " (signal)" : "") + (r.timed_out ? " (timed out, killed)" : "");
    s += "\nstdout (" + std::to_string(r.out.size()) + " bytes): " + r.out.substr(0, 2000);
    s += "\nstderr: " + r.err.substr(0, 4000);
    return s;
}

inline bool kvm_usable(std::string& why) {
    int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        why = std::string("/dev/kvm cannot be opened: ") + strerror(errno);
        return false;
    }
    close(fd);
    return true;
}

inline std::string find_on_path(const std::string& name) {
    const char* p = getenv("PATH");
    std::stringstream dirs(p ? p : "/usr/bin:/bin");
    std::string dir;
    while (std::getline(dirs, dir, ':'))
        if (!dir.empty() && access((dir + "/" + name).c_str(), X_OK) == 0) return dir + "/" + name;
    return {};
}

inline std::string read_file(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

inline std::optional<nlohmann::json> load_json(const std::filesystem::path& p) {
    if (!std::filesystem::exists(p)) return std::nullopt;
    nlohmann::json j = nlohmann::json::parse(read_file(p), nullptr, false);
    if (j.is_discarded()) return std::nullopt;
    return j;
}

}  // namespace fb::testing
