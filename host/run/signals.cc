#include "host/run/signals.h"

#include <atomic>

#include "host/qemu/qemu_guest.h"
#include "host/vmm/vmm_guest.h"

namespace fb {
namespace {

std::atomic<bool> g_interrupted{false};
std::atomic<QemuGuest*> g_qemu{nullptr};
std::atomic<VmmGuest*> g_vmm{nullptr};

void on_signal(int) {
    g_interrupted.store(true);
    stop_current_guest();
}

}  // namespace

SignalScope::SignalScope() {
    g_interrupted.store(false);
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
}

SignalScope::~SignalScope() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
}

bool interrupted() { return g_interrupted.load(); }

CurrentGuest::CurrentGuest(QemuGuest& q) { g_qemu.store(&q); }
CurrentGuest::CurrentGuest(VmmGuest& v) { g_vmm.store(&v); }
CurrentGuest::~CurrentGuest() {
    g_qemu.store(nullptr);
    g_vmm.store(nullptr);
}

void stop_current_guest() {
    if (QemuGuest* q = g_qemu.load()) q->stop();
    if (VmmGuest* v = g_vmm.load()) v->stop();
}

}  // namespace fb
