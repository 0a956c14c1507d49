/* stop.c: the stop signals as a flag (see stop.h). */
#include "base/stop.h"

#include <signal.h>
#include <string.h>

static volatile sig_atomic_t caught;

static void on_stop_signal(int sig) { caught = sig; }

void stop_signals_catch(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESTART | SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
}

int stop_signal_caught(void) { return caught; }

const char *stop_signal_name(void) {
    return caught == SIGTERM ? "SIGTERM" : caught == SIGINT ? "SIGINT" : caught == SIGUSR1 ? "SIGUSR1" : NULL;
}
