/*
 * What the C test programs (test_exoservice.c, test_nats.c) share: the
 * reporting (CHECK, CHECK_RC, run_test, the "N passed, M failed" line),
 * time, the temporary directory with the library's log, service
 * directories, a free port, and the watchdog.
 *
 * Each program is an executable of its own that includes this header
 * once, after `#define _XOPEN_SOURCE 700` and <exoservice.h>. The server
 * the program starts (the bus or nats-server) goes in `server_pid`, so
 * that die() and the watchdog do not leave it running.
 */
#ifndef EXOSERVICE_TEST_SUPPORT_H
#define EXOSERVICE_TEST_SUPPORT_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* Reporting                                                           */

static int passed, failed;
static int current_failed;

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (!(cond)) {                                                     \
            current_failed = 1;                                            \
            printf("    FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);     \
            printf(__VA_ARGS__);                                           \
            printf(" (last error: %s)\n", exo_last_error());               \
            fflush(stdout);                                                \
        }                                                                  \
    } while (0)

#define CHECK_RC(call, want)                                               \
    do {                                                                   \
        int rc_ = (call);                                                  \
        CHECK(rc_ == (want), "%s returned %s, expected %s", #call,         \
              exo_status_name(rc_), exo_status_name(want));                \
    } while (0)

static inline void run_test(const char *name, void (*test)(void)) {
    current_failed = 0;
    printf("  %s ...\n", name);
    fflush(stdout);
    test();
    if (current_failed) {
        failed++;
        printf("  FAILED %s\n", name);
    } else {
        passed++;
        printf("  ok %s\n", name);
    }
    fflush(stdout);
}

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

/* The server the program started (bus or nats-server), -1 when none. */
static pid_t server_pid = -1;

static inline long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Reports a fatal error as one failure and exits (status 2). */
static inline void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("FATAL: ");
    vprintf(fmt, ap);
    printf("\n0 passed, 1 failed\n");
    va_end(ap);
    fflush(stdout);
    if (server_pid > 0) kill(server_pid, SIGKILL);
    exit(2);
}

static char tmp_dir[256];
static char log_path[512];

static inline void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) die("cannot write %s: %s", path, strerror(errno));
    fputs(text, f);
    fclose(f);
}

/* Makes tmp_dir/name/service.yml; returns the directory (static buffer per slot). */
static inline const char *service_dir(const char *name, const char *yaml) {
    static char dirs[8][512];
    static int next;
    char *dir = dirs[next++ % 8];
    snprintf(dir, 512, "%s/%s", tmp_dir, name);
    mkdir(dir, 0755);
    char file[600];
    snprintf(file, sizeof file, "%s/service.yml", dir);
    write_file(file, yaml);
    return dir;
}

/* A port of 127.0.0.1 that nothing listens on at the moment. */
static inline int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &len) != 0)
        die("no free port: %s", strerror(errno));
    close(fd);
    return ntohs(addr.sin_port);
}

/* Runs a service until it stops (the thread body of a service). */
static inline void *run_service(void *svc) {
    intptr_t rc = exo_service_run((exo_service *)svc);
    if (rc != EXO_OK) fprintf(stderr, "run failed: %s\n", exo_last_error());
    return (void *)rc;
}

/* ------------------------------------------------------------------ */
/* Start and end of a test program                                     */

static inline void on_watchdog(int sig) {
    (void)sig;
    static const char text[] = "\nTIMEOUT: the tests hung; see the log\n0 passed, 1 failed\n";
    ssize_t n = write(1, text, sizeof text - 1);
    (void)n;
    if (server_pid > 0) kill(server_pid, SIGKILL);
    _exit(3);
}

/*
 * Makes the temporary directory ($TMPDIR/<name>-XXXXXX), sends the
 * library's log (stderr) to $EXO_TEST_LOG or a file in it, prints
 * "libexoservice VERSION<about>; logs in PATH", and arms the watchdog
 * ($EXO_TEST_TIMEOUT seconds, else `timeout_s`).
 */
static inline void tests_begin(const char *name, const char *about, int timeout_s) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int watchdog = getenv("EXO_TEST_TIMEOUT") ? atoi(getenv("EXO_TEST_TIMEOUT")) : timeout_s;

    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(tmp_dir, sizeof tmp_dir, "%s/%s-XXXXXX", base, name);
    if (!mkdtemp(tmp_dir)) die("mkdtemp: %s", strerror(errno));
    if (getenv("EXO_TEST_LOG"))
        snprintf(log_path, sizeof log_path, "%s", getenv("EXO_TEST_LOG"));
    else
        snprintf(log_path, sizeof log_path, "%s/log.txt", tmp_dir);
    int log_fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (log_fd < 0) die("cannot open %s: %s", log_path, strerror(errno));
    fflush(stderr);
    dup2(log_fd, 2);
    close(log_fd);
    setvbuf(stderr, NULL, _IONBF, 0);
    printf("libexoservice %s%s; logs in %s\n", exo_version(), about, log_path);

    signal(SIGALRM, on_watchdog);
    alarm((unsigned)watchdog);
    signal(SIGPIPE, SIG_IGN);
}

/*
 * Disarms the watchdog, removes the temporary directory when every test
 * passed and no log path was given (else says where the log is), prints
 * "N passed, M failed" and returns the exit status.
 */
static inline int tests_end(void) {
    alarm(0);
    if (failed == 0 && !getenv("EXO_TEST_LOG")) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
        if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", tmp_dir);
    } else {
        printf("logs kept in %s\n", log_path);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}

#endif
