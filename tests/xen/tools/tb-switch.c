/*
 * tb-switch SECONDS
 *
 * Prices the two things a userspace USB bridge adds to every request on this (virtual) CPU:
 * a system call, and a wake-up of another thread or process. Prints, each measured for
 * SECONDS of wall time (CLOCK_MONOTONIC):
 *
 *   SYSCALL_US <µs>        one getppid(2), the cheapest system call that enters the kernel
 *   CLOCK_US <µs>          one clock_gettime(CLOCK_MONOTONIC), which stays in user space
 *                          only where the clock source has a vDSO mode
 *   THREAD_RTT_US <µs>     a round trip between two threads of one process over two pipes:
 *                          two wake-ups, two switches, four system calls (write, read each side)
 *   PROCESS_RTT_US <µs>    the same between two processes (each switch changes address space)
 *
 * With one vCPU every wake-up is a switch. Exists to attribute, in docs/perf, the vhci bridge's
 * added time per request to counts of switches and system calls. Built static by
 * tests/xen/build.sh. Exits 1 with one line on stderr on any error.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

/* The echoing side: reads a byte from `in`, writes it to `out`, until EOF. */
static int ping[2], pong[2];
static void *echo(void *arg)
{
    char c;
    (void)arg;
    while (read(ping[0], &c, 1) == 1)
        if (write(pong[1], &c, 1) != 1)
            die("echo write");
    return NULL;
}

/* Round trips through the echoing side for `secs`; µs each. */
static double round_trips(double secs)
{
    char c = 'x';
    long n = 0;
    double start = now(), t;
    do {
        if (write(ping[1], &c, 1) != 1 || read(pong[0], &c, 1) != 1)
            die("round trip");
        n++;
    } while ((t = now()) - start < secs);
    return (t - start) * 1e6 / n;
}

int main(int argc, char **argv)
{
    if (argc != 2 || atof(argv[1]) <= 0) {
        fprintf(stderr, "usage: tb-switch SECONDS\n");
        return 1;
    }
    double secs = atof(argv[1]), start = now(), t;
    long n = 0;
    /* The clock is read once per 100 calls: it may be a system call itself. */
    do {
        for (int i = 0; i < 100; i++)
            syscall(SYS_getppid);
        n += 100;
    } while ((t = now()) - start < secs);
    printf("SYSCALL_US %.2f\n", (t - start) * 1e6 / n);
    struct timespec ts;
    start = now();
    n = 0;
    do {
        for (int i = 0; i < 100; i++)
            clock_gettime(CLOCK_MONOTONIC, &ts);
        n += 100;
    } while ((t = now()) - start < secs);
    printf("CLOCK_US %.2f\n", (t - start) * 1e6 / n);

    pthread_t thread;
    if (pipe(ping) || pipe(pong))
        die("pipe");
    if (pthread_create(&thread, NULL, echo, NULL))
        die("pthread_create");
    printf("THREAD_RTT_US %.2f\n", round_trips(secs));
    close(ping[1]);
    pthread_join(thread, NULL);
    close(ping[0]);
    close(pong[0]);
    close(pong[1]);

    if (pipe(ping) || pipe(pong))
        die("pipe");
    pid_t child = fork();
    if (child < 0)
        die("fork");
    if (child == 0) {
        close(ping[1]);
        close(pong[0]);
        echo(NULL);
        _exit(0);
    }
    close(ping[0]);
    close(pong[1]);
    printf("PROCESS_RTT_US %.2f\n", round_trips(secs));
    close(ping[1]);
    waitpid(child, NULL, 0);
    return 0;
}
