// Calls into plugins with their crashes caught (see chimera_plugin_host.h).
#include "chimera_plugin_host.h"
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdlib.h>

static const int caught_signals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGABRT};
enum { CAUGHT = sizeof caught_signals / sizeof caught_signals[0], ALTERNATE_STACK = 64 * 1024, THREAD_STACK = 8 << 20 };

// Where a signal on the plugins' thread returns to (NULL on every other thread).
static _Thread_local sigjmp_buf *active_call;

static void on_signal(int signal_number) {
    if (active_call) siglongjmp(*active_call, signal_number);
    // Another thread's crash while a call runs (the handlers are the process's): as if no
    // handler were there.
    signal(signal_number, SIG_DFL);
    raise(signal_number);
}

// The posted call, and the plugins' thread; all under `lock`.
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER, one_call = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t posted = PTHREAD_COND_INITIALIZER, finished = PTHREAD_COND_INITIALIZER;
static struct { void (*run)(void *); void *context; int pending, done, signal; } call;
static int thread_running;
static pthread_t plugin_thread;

static void *plugin_thread_main(void *unused) {
    (void)unused;
    // A stack overflow in a plugin leaves the handler no stack but this one.
    stack_t stack = {.ss_sp = malloc(ALTERNATE_STACK), .ss_size = ALTERNATE_STACK, .ss_flags = 0};
    if (stack.ss_sp) sigaltstack(&stack, NULL);
    sigjmp_buf here;
    pthread_mutex_lock(&lock);
    for (;;) {
        while (!call.pending) pthread_cond_wait(&posted, &lock);
        call.pending = 0;
        pthread_mutex_unlock(&lock);
        struct sigaction previous[CAUGHT], action = {0};
        action.sa_handler = on_signal;
        action.sa_flags = SA_ONSTACK;
        sigemptyset(&action.sa_mask);
        for (int i = 0; i < CAUGHT; i++) sigaction(caught_signals[i], &action, &previous[i]);
        int signal_number = sigsetjmp(here, 1);
        if (signal_number == 0) {
            active_call = &here;
            call.run(call.context);
        }
        active_call = NULL;
        for (int i = 0; i < CAUGHT; i++) sigaction(caught_signals[i], &previous[i], NULL);
        pthread_mutex_lock(&lock);
        call.signal = signal_number;
        call.done = 1;
        pthread_cond_signal(&finished);
        if (signal_number) {  // retired (its alternate stack with it: the crash may still reference it)
            thread_running = 0;
            pthread_mutex_unlock(&lock);
            return NULL;
        }
    }
}

int chimera_run_guarded(void (*run)(void *), void *context) {
    if (thread_running && pthread_equal(pthread_self(), plugin_thread)) {  // a call from within a call
        run(context);
        return 0;
    }
    pthread_mutex_lock(&one_call);
    pthread_mutex_lock(&lock);
    if (!thread_running) {
        pthread_attr_t attributes;
        pthread_attr_init(&attributes);
        pthread_attr_setstacksize(&attributes, THREAD_STACK);
        pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
        thread_running = pthread_create(&plugin_thread, &attributes, plugin_thread_main, NULL) == 0;
        pthread_attr_destroy(&attributes);
        if (!thread_running) {
            pthread_mutex_unlock(&lock);
            pthread_mutex_unlock(&one_call);
            return -1;
        }
    }
    call.run = run;
    call.context = context;
    call.done = 0;
    call.pending = 1;
    pthread_cond_signal(&posted);
    while (!call.done) pthread_cond_wait(&finished, &lock);
    int signal_number = call.signal;
    pthread_mutex_unlock(&lock);
    pthread_mutex_unlock(&one_call);
    return signal_number;
}

const char *chimera_signal_description(int signal_number) {
    switch (signal_number) {
    case SIGSEGV: return "SIGSEGV (invalid memory access)";
    case SIGBUS: return "SIGBUS (bad memory access)";
    case SIGILL: return "SIGILL (illegal instruction: a Swift plugin's runtime trap)";
    case SIGFPE: return "SIGFPE (arithmetic error)";
    case SIGTRAP: return "SIGTRAP (trap)";
    case SIGABRT: return "SIGABRT (abort)";
    case -1: return "no thread could be started for the call";
    default: return "a signal";
    }
}
