// SIGINT and SIGTERM during a run: the boot in progress stops, the cells it finished are kept and
// the run ends with exit 130. Handlers only store to atomics; the boots poll interrupted().
#pragma once

#include <csignal>

namespace fb {

class QemuGuest;
class VmmGuest;

// Installs the handlers for its lifetime (and clears the interrupted flag).
class SignalScope {
public:
    SignalScope();
    ~SignalScope();
    SignalScope(const SignalScope&) = delete;
    SignalScope& operator=(const SignalScope&) = delete;

private:
    struct sigaction old_int_ {}, old_term_ {};
};

bool interrupted();

// The guest a signal stops: registered for as long as it runs.
class CurrentGuest {
public:
    explicit CurrentGuest(QemuGuest& q);
    explicit CurrentGuest(VmmGuest& v);
    ~CurrentGuest();
    CurrentGuest(const CurrentGuest&) = delete;
    CurrentGuest& operator=(const CurrentGuest&) = delete;
};

// Ends the boot in progress without marking the run interrupted (the caller says why).
void stop_current_guest();

}  // namespace fb
