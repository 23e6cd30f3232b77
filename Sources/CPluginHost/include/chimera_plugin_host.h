// Calls into plugins with the plugin's crashes caught. The host runs every call into a plugin
// through chimera_run_guarded: on a thread of its own, the plugins' thread, where a signal raised
// during the call (SIGSEGV, SIGBUS, SIGILL — a Swift plugin's trap —, SIGFPE, SIGTRAP, SIGABRT)
// ends the call and retires that thread: what the crash left on its stack (the plugin's frames,
// Swift's exclusivity records among them) is never run on again, and the host's own threads are
// untouched. In C because catching needs sigsetjmp/siglongjmp, which Swift cannot call.
#ifndef CHIMERA_PLUGIN_HOST_H
#define CHIMERA_PLUGIN_HOST_H

// Runs run(context) on the plugins' thread and waits for it: returns 0, the signal that ended the
// call, or -1 when no thread could be started (the call did not run). One call at a time; a call
// made from within a call runs in place.
int chimera_run_guarded(void (*run)(void *context), void *context);

// "SIGSEGV (invalid memory access)" and the like, for messages.
const char *chimera_signal_description(int signal);

#endif
