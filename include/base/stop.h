/* stop.h: the stop signals (SIGTERM, SIGINT, SIGUSR1) as a flag.
 *
 * A command that must end cleanly at a point of its choosing (a training run at a step
 * boundary with a checkpoint, gpt prepare with its temporary file removed) catches them
 * with stop_signals_catch() and polls stop_signal_caught(). The first signal of a kind
 * only sets the flag; a second one has its default effect, so a stuck process can
 * still be interrupted. */
#ifndef GPT_STOP_H
#define GPT_STOP_H

void stop_signals_catch(void);
/* The signal caught (SIGTERM, SIGINT or SIGUSR1), or 0. */
int stop_signal_caught(void);
/* "SIGTERM", "SIGINT" or "SIGUSR1" for the signal caught, NULL if none. */
const char *stop_signal_name(void);

#endif
