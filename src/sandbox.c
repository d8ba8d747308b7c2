/*
 * sandbox.c - a parse server that forks one limited child per untrusted file.
 *
 * What: the service's worker threads ask for a PDF to be opened and its text
 * extracted; the work happens in a child process that limits its own CPU
 * time and address space before it reads the file, and that the server kills
 * at a wall-clock deadline. The worker gets the child's answer followed by
 * the server's status record (how the child ended, its CPU time and peak
 * memory from wait4), so a limit or a crash becomes a verdict with a reason.
 *
 * How (one request):
 *   worker: socketpair(); hands one end to the server over the control
 *           socket (SCM_RIGHTS), writes a request header and the file, reads
 *           until EOF: [answer][status], bounded in size and time.
 *   server: poll()s the control socket and, per child, its control socket
 *           and a pidfd. A request goes to an idle child (SCM_RIGHTS again),
 *           or to a newly fork()ed one (the server has one thread, so the
 *           child may run anything). When the child reports it done, or when
 *           its pidfd says it died (wait4: exit status, CPU, peak memory),
 *           the server appends the status record to the request and closes
 *           it; past the deadline it SIGKILLs the child.
 *   child:  set up once with RLIMIT_AS (its size + the budget), no core
 *           files and no new privileges; for every request it arms
 *           ITIMER_PROF with the CPU budget (ms precision; SIGPROF's default
 *           action ends it), reads the request, runs pdf.c, writes the
 *           answer, disarms the timer and reports. A child serves at most
 *           CHILD_MAX_USES requests and retires early once its memory has
 *           grown, so forking (about 1.3 ms of CPU per child) is paid rarely
 *           while no child carries state from many files; a child that hit a
 *           limit is gone with the one file that did it.
 * The status record comes last and from the server, so a child cannot forge
 * how it ended; the worker trusts the answer only when the child finished.
 *
 * The server is this binary re-executed (posix_spawn, so nothing is forked
 * in the multithreaded service) with an empty environment: the children of
 * a hostile file hold no API key and no database URL.
 *
 * Threads: any number of workers call ev_sandbox_pdf() at once. `lock`
 * guards `ctrl_fd` and `server_pid` (handing a request over, restarting a
 * dead server); it is never held while a request is written or read. The
 * server process is single-threaded. Never logs.
 */
#include "ev/sandbox.h"

#include "ev/error.h"
#include "ev/util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define REQ_MAGIC 0x45565251u    /* "EVRQ" */
#define ANS_MAGIC 0x45564153u    /* "EVAS" */
#define STATUS_MAGIC 0x45565354u /* "EVST" */
/* Longest reason a child may send; pdf.c's reasons are far shorter. */
#define REASON_CAP 1024
/* The largest file a request may carry (PDF_MAX_BYTES is at most 75 MB). */
#define REQUEST_CAP ((uint64_t)80 * 1000 * 1000)
/* Children one server runs at once, and requests that may wait for one. */
#define MAX_CHILDREN 64
#define MAX_QUEUED 1024
/* Requests one child serves before it is replaced by a fresh one. */
#define CHILD_MAX_USES 100
/* Niceness of the parse children. */
#define CHILD_NICE 10
/* How long a worker waits beyond the deadline for the server's status. */
#define STATUS_SLACK_MS 5000
/* A child whose peak memory reached this share of the budget ran out of it. */
#define MEMORY_SHARE 0.5
/* The child's exit status when the file cannot even be held in memory. */
#define EXIT_NOMEM 3

typedef struct req_hdr {
    uint32_t magic;
    uint32_t max_pages;
    uint32_t text_max;
    uint32_t page_text_max;
    uint64_t len;
} req_hdr_t;

typedef struct ans_hdr {
    uint32_t magic;
    int32_t rc;
    int32_t pages;
    uint32_t truncated;
    uint32_t reason_len;
    uint32_t text_len;
} ans_hdr_t;

typedef struct status_rec {
    uint32_t magic;
    uint32_t signaled; /* 1: code is a signal number, 0: an exit status */
    int32_t code;
    uint32_t deadline_killed;
    int64_t cpu_us;
    int64_t max_rss_kb;
    int64_t wall_ms;
} status_rec_t;

struct ev_sandbox {
    ev_sandbox_options_t opts; /* immutable; exe points at exe_copy */
    char *exe_copy;
    pthread_mutex_t lock;
    int ctrl_fd;      /* guarded by lock */
    pid_t server_pid; /* guarded by lock */
};

/* ---- small helpers ------------------------------------------------------- */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void set_reason(char **reason, char *s)
{
    if (reason)
        *reason = s;
    else
        free(s);
}

/* Blocking full write/read on a descriptor the child owns alone. */
static bool write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        c += w;
        n -= (size_t)w;
    }
    return true;
}

static bool read_all(int fd, void *p, size_t n)
{
    char *c = p;
    while (n > 0) {
        ssize_t r = read(fd, c, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        c += r;
        n -= (size_t)r;
    }
    return true;
}

/* ---- the parse children ------------------------------------------------------- */

/* A child's report after each request, on its control socket. */
typedef struct done_msg {
    uint32_t magic;
    uint32_t retiring; /* the child exits after this message */
    int64_t cpu_us;    /* CPU time of this request */
    int64_t max_rss_kb;
} done_msg_t;

static int64_t self_cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (int64_t)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec +
           (int64_t)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec;
}

/* Field `field` of /proc/self/statm in bytes (0: size, 1: resident), 0 when unknown. */
static uint64_t statm_bytes(int field)
{
    char buf[96] = {0};
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    char *p = buf;
    unsigned long long v = strtoull(p, &p, 10);
    if (field == 1)
        v = strtoull(p, NULL, 10);
    return (uint64_t)v * (uint64_t)sysconf(_SC_PAGESIZE);
}

/*
 * Parsers end with abort() (or a fault) when an allocation fails; errno then
 * still says ENOMEM. Reported as EXIT_NOMEM so the reason can say "memory";
 * any other fatal signal is re-raised so the server sees it as such.
 */
static void on_fatal(int sig)
{
    if (errno == ENOMEM)
        _exit(EXIT_NOMEM);
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Limits that hold for the child's whole life, set before any request. */
static void child_limit(int memory_mb)
{
    struct rlimit core = {0, 0};
    setrlimit(RLIMIT_CORE, &core);
    uint64_t base = statm_bytes(0);
    if (base > 0) {
        rlim_t as = (rlim_t)(base + (uint64_t)memory_mb * 1024 * 1024);
        struct rlimit r = {as, as};
        setrlimit(RLIMIT_AS, &r);
    }
    (void)prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    /* Below the service's own threads: a file that burns its CPU budget must
     * not starve the heartbeat that keeps the worker's lease. */
    (void)setpriority(PRIO_PROCESS, 0, CHILD_NICE);
    static const int fatal[] = {SIGABRT, SIGSEGV, SIGBUS, SIGTRAP};
    for (size_t i = 0; i < EV_ARRAY_LEN(fatal); i++)
        signal(fatal[i], on_fatal);
}

/* CPU time of one request, ms precision; SIGPROF's default action ends the child. */
static void arm_cpu(int cpu_ms)
{
    struct itimerval it = {.it_value = {cpu_ms / 1000, (cpu_ms % 1000) * 1000}};
    setitimer(ITIMER_PROF, &it, NULL);
}

/* One request on fd: read it, parse, write the answer. */
static void child_request(int fd)
{
    req_hdr_t rq;
    if (!read_all(fd, &rq, sizeof(rq)) || rq.magic != REQ_MAGIC || rq.len > REQUEST_CAP ||
        rq.text_max == 0)
        return;
    unsigned char *data = malloc(rq.len ? rq.len : 1);
    if (!data)
        _exit(EXIT_NOMEM);
    if (!read_all(fd, data, rq.len)) {
        free(data);
        return;
    }
    ev_pdf_options_t po = EV_PDF_OPTIONS_INIT;
    po.max_pages = (int)rq.max_pages;
    ev_pdf_t *pdf = NULL;
    char *reason = NULL, *text = NULL;
    size_t tlen = 0;
    bool trunc = false;
    int rc = ev_pdf_open(&pdf, data, rq.len, &po, &reason);
    if (rc == 0 && ev_pdf_text_paged(pdf, &text, &tlen, &trunc, 0, rq.text_max,
                                     rq.page_text_max ? rq.page_text_max : rq.text_max) < 0) {
        rc = EV_EPARSE;
        reason = ev_strdup("PDF is damaged: a page cannot be read");
    }
    size_t rlen = reason ? strnlen(reason, REASON_CAP) : 0;
    ans_hdr_t a = {.magic = ANS_MAGIC,
                   .rc = rc,
                   .pages = pdf ? ev_pdf_page_count(pdf) : 0,
                   .truncated = trunc,
                   .reason_len = (uint32_t)rlen,
                   .text_len = (uint32_t)(rc == 0 ? tlen : 0)};
    (void)(write_all(fd, &a, sizeof(a)) && write_all(fd, reason, rlen) &&
           write_all(fd, text, a.text_len));
    free(text);
    free(reason);
    ev_pdf_free(pdf);
    free(data);
}

static int recv_fd(int sock, bool *gone);

/*
 * A parse child: serves requests handed over on `ctl` one at a time, each
 * under a fresh CPU budget, until the server closes ctl or the child retires
 * (after CHILD_MAX_USES requests, or once its memory has grown), so no
 * child carries state from many files and none grows without end.
 */
static void child_main(int ctl, int cpu_ms, int memory_mb)
{
    child_limit(memory_mb);
    uint64_t rss0 = statm_bytes(1);
    for (int uses = 1;; uses++) {
        bool gone = false;
        int fd = recv_fd(ctl, &gone);
        if (fd < 0) {
            if (gone)
                _exit(0);
            continue;
        }
        int64_t cpu0 = self_cpu_us();
        arm_cpu(cpu_ms);
        child_request(fd);
        arm_cpu(0);
        close(fd);
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        uint64_t rss = statm_bytes(1);
        done_msg_t d = {.magic = STATUS_MAGIC,
                        .retiring = uses >= CHILD_MAX_USES ||
                                    rss > rss0 + (uint64_t)memory_mb * 1024 * 1024 / 4,
                        .cpu_us = self_cpu_us() - cpu0,
                        .max_rss_kb = ru.ru_maxrss};
        if (send(ctl, &d, sizeof(d), MSG_NOSIGNAL) != (ssize_t)sizeof(d) || d.retiring)
            _exit(0);
    }
}

/* ---- the server ------------------------------------------------------------------ */

typedef struct kid {
    pid_t pid;
    int pidfd, ctl;
    int reqfd; /* the request being served, or -1 when idle */
    int64_t start_ms, cpu0_us;
    bool killed, retiring, dead;
} kid_t;

typedef struct server {
    int ctrl;
    int cpu_ms, memory_mb, timeout_ms;
    kid_t kids[MAX_CHILDREN];
    int n;
    int queue[MAX_QUEUED]; /* requests waiting for a child, oldest first */
    int nq;
} server_t;

static int pidfd_open_(pid_t pid)
{
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

/* CPU time a process has used so far (its CPU-time clock), 0 when unknown. */
static int64_t proc_cpu_us(pid_t pid)
{
    clockid_t cid;
    struct timespec ts;
    if (clock_getcpuclockid(pid, &cid) != 0 || clock_gettime(cid, &ts) != 0)
        return 0;
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Receives one descriptor; -1 with *gone when the peer has closed. */
static int recv_fd(int sock, bool *gone)
{
    char byte;
    struct iovec iov = {&byte, 1};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } u;
    struct msghdr m = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
    ssize_t r = recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
    *gone = r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN);
    if (r <= 0)
        return -1;
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
        return -1;
    int fd;
    memcpy(&fd, CMSG_DATA(c), sizeof(fd));
    return fd;
}

static bool send_fd(int sock, int fd)
{
    char byte = 'R';
    struct iovec iov = {&byte, 1};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } u;
    memset(&u, 0, sizeof(u));
    struct msghdr m = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof(fd));
    return sendmsg(sock, &m, MSG_NOSIGNAL) == 1;
}

/* Forks a parse child; returns its slot or -1. The server has one thread,
 * so the child may run anything. */
static int spawn_kid(server_t *sv)
{
    int sp[2];
    if (sv->n == MAX_CHILDREN || socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
        /* Keep only the control socket: a child holding another request's
         * socket would delay that request's end of file. */
        dup2(sp[1], 3);
        (void)syscall(SYS_close_range, 4, ~0U, 0);
        int null = open("/dev/null", O_RDWR);
        if (null >= 0)
            dup2(null, 2);
        child_main(3, sv->cpu_ms, sv->memory_mb);
    }
    close(sp[1]);
    int pidfd = pid > 0 ? pidfd_open_(pid) : -1;
    if (pid < 0 || pidfd < 0) {
        if (pid > 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
        }
        close(sp[0]);
        return -1;
    }
    sv->kids[sv->n] = (kid_t){.pid = pid, .pidfd = pidfd, .ctl = sp[0], .reqfd = -1};
    return sv->n++;
}

/* Appends the status record to the request and closes it. */
static void finish_request(kid_t *k, uint32_t signaled, int32_t code, int64_t cpu_us,
                           int64_t max_rss_kb)
{
    status_rec_t rec = {.magic = STATUS_MAGIC,
                        .signaled = signaled,
                        .code = code,
                        .deadline_killed = k->killed,
                        .cpu_us = cpu_us,
                        .max_rss_kb = max_rss_kb,
                        .wall_ms = mono_ms() - k->start_ms};
    /* Never block the server: the worker reads until end of file, so the
     * record fits; if the worker has gone, it is simply lost. */
    (void)send(k->reqfd, &rec, sizeof(rec), MSG_DONTWAIT | MSG_NOSIGNAL);
    close(k->reqfd);
    k->reqfd = -1;
    k->killed = false;
}

/* Hands a request to an idle child (forking one if needed); false: none free. */
static bool dispatch(server_t *sv, int reqfd)
{
    int slot = -1;
    for (int i = 0; i < sv->n && slot < 0; i++)
        if (sv->kids[i].reqfd < 0 && !sv->kids[i].retiring && !sv->kids[i].dead)
            slot = i;
    if (slot < 0 && (slot = spawn_kid(sv)) < 0)
        return false;
    kid_t *k = &sv->kids[slot];
    k->reqfd = reqfd;
    k->start_ms = mono_ms();
    k->cpu0_us = proc_cpu_us(k->pid);
    k->killed = false;
    if (!send_fd(k->ctl, reqfd)) {
        kill(k->pid, SIGKILL); /* its end is reported like any death */
        k->killed = false;
    }
    return true;
}

/* A child's done message: the request it served is finished. */
static void on_done(kid_t *k)
{
    done_msg_t d;
    ssize_t r = recv(k->ctl, &d, sizeof(d), MSG_DONTWAIT);
    if (r != (ssize_t)sizeof(d) || d.magic != STATUS_MAGIC || k->reqfd < 0)
        return;
    finish_request(k, 0, 0, d.cpu_us, d.max_rss_kb);
    k->retiring = d.retiring != 0;
}

/* A child ended: reap it; a request it was serving gets the kernel's account. */
static void on_exit_(kid_t *k)
{
    int st = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof(ru));
    while (wait4(k->pid, &st, 0, &ru) < 0 && errno == EINTR)
        ;
    if (k->reqfd >= 0) {
        int64_t cpu = (int64_t)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec +
                      (int64_t)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec;
        finish_request(k, WIFSIGNALED(st) ? 1 : 0, WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st),
                       cpu > k->cpu0_us ? cpu - k->cpu0_us : cpu, ru.ru_maxrss);
    }
    close(k->ctl);
    close(k->pidfd);
    k->dead = true;
}

static void compact(server_t *sv)
{
    int j = 0;
    for (int i = 0; i < sv->n; i++)
        if (!sv->kids[i].dead)
            sv->kids[j++] = sv->kids[i];
    sv->n = j;
}

static void kill_all(server_t *sv)
{
    for (int i = 0; i < sv->n; i++) {
        kill(sv->kids[i].pid, SIGKILL);
        on_exit_(&sv->kids[i]);
    }
    sv->n = 0;
    for (int i = 0; i < sv->nq; i++)
        close(sv->queue[i]);
    sv->nq = 0;
}

/* One turn of the loop; returns false once the service has gone. */
static bool serve_once(server_t *sv)
{
    struct pollfd pfd[1 + 2 * MAX_CHILDREN];
    int64_t now = mono_ms(), wait = -1;
    int n = sv->n;
    pfd[0] = (struct pollfd){.fd = sv->ctrl, .events = POLLIN};
    for (int i = 0; i < n; i++) {
        kid_t *k = &sv->kids[i];
        pfd[1 + 2 * i] = (struct pollfd){.fd = k->ctl, .events = POLLIN};
        pfd[2 + 2 * i] = (struct pollfd){.fd = k->pidfd, .events = POLLIN};
        if (k->reqfd >= 0 && !k->killed) {
            int64_t left = k->start_ms + sv->timeout_ms - now;
            left = left < 0 ? 0 : left;
            wait = wait < 0 || left < wait ? left : wait;
        }
    }
    if (poll(pfd, (nfds_t)(1 + 2 * n), (int)wait) < 0 && errno != EINTR)
        return false;
    now = mono_ms();
    /* Done messages first: a child that reported and then retired has
     * finished its request, its exit is no death. */
    for (int i = 0; i < n; i++)
        if (pfd[1 + 2 * i].revents & POLLIN)
            on_done(&sv->kids[i]);
    for (int i = 0; i < n; i++) {
        kid_t *k = &sv->kids[i];
        if (pfd[2 + 2 * i].revents & (POLLIN | POLLHUP | POLLERR)) {
            on_exit_(k);
        } else if (k->reqfd >= 0 && !k->killed && now - k->start_ms >= sv->timeout_ms) {
            kill(k->pid, SIGKILL);
            k->killed = true;
        }
    }
    compact(sv);
    if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) {
        bool gone = false;
        int fd = recv_fd(sv->ctrl, &gone);
        if (gone)
            return false;
        if (fd >= 0) {
            if (sv->nq < MAX_QUEUED)
                sv->queue[sv->nq++] = fd;
            else
                close(fd); /* the worker sees no status and retries later */
        }
    }
    while (sv->nq > 0 && dispatch(sv, sv->queue[0]))
        memmove(sv->queue, sv->queue + 1, (size_t)--sv->nq * sizeof(int));
    return true;
}

static bool parse_arg(const char *s, int min, int max, int *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return false;
    *out = (int)v;
    return true;
}

int ev_sandbox_server_main(int argc, char **argv)
{
    server_t sv = {.ctrl = 3};
    if (argc != 5 || !parse_arg(argv[2], 1, INT_MAX, &sv.cpu_ms) ||
        !parse_arg(argv[3], 1, 1 << 20, &sv.memory_mb) ||
        !parse_arg(argv[4], 1, INT_MAX, &sv.timeout_ms)) {
        fprintf(stderr, "%s: internal mode, started by the service itself\n", argv[0]);
        return 2;
    }
    /* Descriptors the service did not mark close-on-exec (a socket opened
     * by a library) must not live on here: only the control socket stays. */
    (void)syscall(SYS_close_range, 4, ~0U, 0);
    /* Whatever the spawner blocked or ignored, children need the default
     * actions of the signals their limits raise. */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPROF, SIG_DFL);
    signal(SIGPIPE, SIG_IGN);
    /* A Ctrl-C or a SIGTERM sent to the whole group is the service's to
     * handle: parses in flight during its grace period must still finish.
     * The server ends when the service closes its control socket. */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    /* Children inherit poppler's global tables instead of building them. */
    (void)ev_pdf_global_init();
    while (serve_once(&sv))
        ;
    kill_all(&sv);
    return 0;
}

/* ---- the service side ----------------------------------------------------------- */

/* Starts the server; caller holds lock (or owns sb exclusively). */
static int spawn_server(ev_sandbox_t *sb)
{
    int rc = 0, sv[2] = {-1, -1};
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&at);
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        rc = EV_EIO;
        goto out;
    }
    /* dup2 onto 3 clears close-on-exec, unless it is already 3. */
    if (sv[1] == 3) {
        int d = fcntl(sv[1], F_DUPFD_CLOEXEC, 4);
        close(sv[1]);
        sv[1] = d;
    }
    posix_spawn_file_actions_adddup2(&fa, sv[1], 3);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPROF);
    sigaddset(&defaults, SIGXCPU);
    sigaddset(&defaults, SIGTERM);
    sigaddset(&defaults, SIGINT);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &defaults);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

    char cpu[16], mem[16], tmo[16];
    snprintf(cpu, sizeof(cpu), "%d", sb->opts.cpu_ms);
    snprintf(mem, sizeof(mem), "%d", sb->opts.memory_mb);
    snprintf(tmo, sizeof(tmo), "%d", sb->opts.timeout_ms);
    char *argv[] = {"event-validator", EV_SANDBOX_SERVER_ARG, cpu, mem, tmo, NULL};
    char *envp[] = {NULL};
    pid_t pid;
    if (posix_spawn(&pid, sb->opts.exe, &fa, &at, argv, envp) != 0) {
        rc = EV_EIO;
        goto out;
    }
    sb->server_pid = pid;
    sb->ctrl_fd = sv[0];
    sv[0] = -1;
out:
    if (sv[0] >= 0)
        close(sv[0]);
    if (sv[1] >= 0)
        close(sv[1]);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    return rc;
}

/* Caller holds lock. */
static void stop_server(ev_sandbox_t *sb)
{
    if (sb->ctrl_fd >= 0)
        close(sb->ctrl_fd);
    sb->ctrl_fd = -1;
    if (sb->server_pid > 0)
        while (waitpid(sb->server_pid, NULL, 0) < 0 && errno == EINTR)
            ;
    sb->server_pid = 0;
}

int ev_sandbox_new(ev_sandbox_t **out, const ev_sandbox_options_t *opts)
{
    ev_sandbox_t *sb = ev_calloc(1, sizeof(*sb));
    sb->opts = *opts;
    if (opts->exe) {
        sb->exe_copy = ev_strdup(opts->exe);
    } else {
        /* Resolved now: under valgrind /proc/self/exe itself names the tool. */
        char buf[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
        buf[n > 0 ? n : 0] = '\0';
        sb->exe_copy = ev_strdup(n > 0 ? buf : "/proc/self/exe");
    }
    sb->opts.exe = sb->exe_copy;
    sb->ctrl_fd = -1;
    pthread_mutex_init(&sb->lock, NULL);
    int rc = spawn_server(sb);
    if (rc < 0) {
        ev_sandbox_free(sb);
        sb = NULL;
    }
    *out = sb;
    return rc;
}

void ev_sandbox_free(ev_sandbox_t *sb)
{
    if (!sb)
        return;
    stop_server(sb);
    pthread_mutex_destroy(&sb->lock);
    free(sb->exe_copy);
    free(sb);
}

/* Hands `fd` to the server, restarting it once if it has died. */
static int hand_over(ev_sandbox_t *sb, int fd)
{
    int rc = EV_EIO;
    pthread_mutex_lock(&sb->lock);
    for (int attempt = 0; attempt < 2; attempt++) {
        if (sb->ctrl_fd >= 0 && send_fd(sb->ctrl_fd, fd)) {
            rc = 0;
            break;
        }
        stop_server(sb);
        if (spawn_server(sb) < 0)
            break;
    }
    pthread_mutex_unlock(&sb->lock);
    return rc;
}

/* Waits for `events` on fd until deadline; false when it passed. */
static bool wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - mono_ms();
        if (left <= 0)
            return false;
        struct pollfd p = {.fd = fd, .events = events};
        int r = poll(&p, 1, (int)left);
        if (r > 0)
            return true;
        if (r < 0 && errno != EINTR)
            return false;
    }
}

/* Sends the request; stops quietly when the child has gone (the status says why). */
static bool send_request(int fd, const req_hdr_t *rq, const void *data, int64_t deadline)
{
    const char *parts[2] = {(const char *)rq, data};
    size_t lens[2] = {sizeof(*rq), (size_t)rq->len};
    for (int p = 0; p < 2; p++) {
        size_t off = 0;
        while (off < lens[p]) {
            ssize_t w = send(fd, parts[p] + off, lens[p] - off, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w > 0) {
                off += (size_t)w;
                continue;
            }
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0 && errno == EAGAIN) {
                if (!wait_fd(fd, POLLOUT, deadline))
                    return false;
                continue;
            }
            return true; /* EPIPE and friends: read what the server says */
        }
    }
    return true;
}

/* Reads until end of file, at most cap bytes. Returns false on timeout or overflow. */
static bool read_reply(int fd, char **buf, size_t *len, size_t cap, int64_t deadline)
{
    size_t have = 0, size = 4096;
    char *b = ev_malloc(size);
    bool ok = false;
    for (;;) {
        if (have == size) {
            if (size >= cap)
                goto out;
            size = size * 2 < cap ? size * 2 : cap;
            b = ev_realloc(b, size);
        }
        ssize_t r = recv(fd, b + have, size - have, MSG_DONTWAIT);
        if (r > 0) {
            have += (size_t)r;
        } else if (r == 0) {
            ok = true;
            goto out;
        } else if (errno == EAGAIN) {
            if (!wait_fd(fd, POLLIN, deadline))
                goto out;
        } else if (errno != EINTR) {
            ok = true; /* a reset: whatever arrived is all there is */
            goto out;
        }
    }
out:
    *buf = b;
    *len = have;
    return ok;
}

static const char *signal_name(int sig)
{
    const char *s = sigabbrev_np(sig);
    return s ? s : "unknown";
}

/* Turns the child's end into a code and reason; fills out from the answer. */
/*
 * How the child ended, when that decides the verdict: a limit, a crash, the
 * deadline. Returns 0 for a child that finished normally (its answer
 * decides), else the code with *r the reason; sets *limit_killed.
 */
static int child_end(const ev_sandbox_options_t *o, const status_rec_t *st, bool *limit_killed,
                     char **r)
{
    int rc = 0;
    bool abnormal = st->signaled || st->code != 0;
    /* Killed at the deadline having used a good share of its CPU budget,
     * the file is heavy (an honest PDF needs a few per cent of it); with
     * little CPU used, the machine was too busy to tell. */
    bool cpu_out = (st->signaled && (st->code == SIGPROF || st->code == SIGXCPU)) ||
                   (st->deadline_killed && st->cpu_us >= (int64_t)o->cpu_ms * 1000 / 4);
    /* Past the address-space limit parsers abort (EXIT_NOMEM from on_fatal,
     * or a signal or an error exit after a peak near the budget); a SIGKILL
     * we did not send comes from the kernel's out-of-memory killer. */
    bool mem_out =
        abnormal && !cpu_out && !st->deadline_killed &&
        ((!st->signaled && st->code == EXIT_NOMEM) || (st->signaled && st->code == SIGKILL) ||
         st->max_rss_kb >= (int64_t)(o->memory_mb * 1024 * MEMORY_SHARE));
    *limit_killed = cpu_out || mem_out || st->deadline_killed;
    *r = NULL;
    if (cpu_out) {
        *r = ev_asprintf("PDF needs more than %g s of processing; it may be malformed or built "
                         "to exhaust the validator",
                         o->cpu_ms / 1000.0);
        rc = EV_ELIMIT;
    } else if (mem_out) {
        *r = ev_asprintf("PDF needs more than %d MiB of memory to process; it may be malformed "
                         "or built to exhaust the validator",
                         o->memory_mb);
        rc = EV_ELIMIT;
    } else if (st->deadline_killed) {
        *r = ev_asprintf("PDF processing did not finish within %g s while using little CPU; "
                         "the validator was too busy, will retry",
                         o->timeout_ms / 1000.0);
        rc = EV_ETIMEOUT;
    } else if (st->signaled) {
        *r = ev_asprintf("PDF could not be processed: the parser crashed (%s); the file is "
                         "malformed",
                         signal_name(st->code));
        rc = EV_EPARSE;
    } else if (st->code != 0) {
        *r = ev_asprintf("PDF could not be processed: the parser failed (exit status %d); the "
                         "file is malformed",
                         st->code);
        rc = EV_EPARSE;
    }
    return rc;
}

/* The answer of a child that finished: pdf.c's verdict and text. */
static int read_answer(ev_sandbox_pdf_t *out, const char *ans, size_t ans_len, char **r)
{
    int rc = EV_EIO;
    ans_hdr_t a;
    *r = NULL;
    if (ans_len >= sizeof(a))
        memcpy(&a, ans, sizeof(a));
    if (ans_len < sizeof(a) || a.magic != ANS_MAGIC || a.reason_len > REASON_CAP ||
        ans_len != sizeof(a) + (size_t)a.reason_len + a.text_len ||
        (a.rc != 0 && a.rc != EV_ETYPE && a.rc != EV_EPARSE && a.rc != EV_ELIMIT)) {
        *r = ev_strdup("PDF could not be processed: the parse helper gave no usable answer");
        goto out;
    }
    const char *reason = ans + sizeof(a), *text = reason + a.reason_len;
    rc = a.rc;
    if (rc == 0) {
        /* Normalised again here: the text is the output of a process that
         * parsed hostile input, so it is not trusted to be clean. */
        out->pages = a.pages;
        out->text = ev_pdf_normalise_text(text, a.text_len, a.text_len + 1, &out->text_len, NULL);
        out->truncated = a.truncated != 0;
    } else {
        *r = ev_pdf_normalise_text(reason, a.reason_len, REASON_CAP, NULL, NULL);
    }
out:
    return rc;
}

/* Turns the child's end and answer into a code and reason; fills out. */
static int classify(ev_sandbox_t *sb, ev_sandbox_pdf_t *out, const status_rec_t *st,
                    const char *ans, size_t ans_len, char **reason)
{
    char *r = NULL;
    int rc = child_end(&sb->opts, st, &out->usage.limit_killed, &r);
    if (rc == 0)
        rc = read_answer(out, ans, ans_len, &r);
    set_reason(reason, r);
    return rc;
}

int ev_sandbox_pdf(ev_sandbox_t *sb, ev_sandbox_pdf_t *out, const void *data, size_t len,
                   int max_pages, size_t text_max, size_t page_text_max, char **reason)
{
    int rc, sv[2] = {-1, -1};
    char *buf = NULL;
    size_t got = 0;
    memset(out, 0, sizeof(*out));
    EV_ASSERT(text_max > 0 && text_max < UINT32_MAX && page_text_max < UINT32_MAX);

    int64_t start = mono_ms();
    int64_t deadline = start + sb->opts.timeout_ms + STATUS_SLACK_MS;
    if (len > REQUEST_CAP || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        rc = EV_EIO;
        set_reason(reason, ev_strdup("PDF could not be handed to the parse helper"));
        goto out;
    }
    rc = hand_over(sb, sv[1]);
    close(sv[1]);
    if (rc < 0) {
        set_reason(reason, ev_strdup("PDF could not be processed: the parse helper cannot be "
                                     "started"));
        goto out;
    }
    req_hdr_t rq = {REQ_MAGIC, (uint32_t)(max_pages > 0 ? max_pages : 0), (uint32_t)text_max,
                    (uint32_t)page_text_max, (uint64_t)len};
    size_t cap = sizeof(ans_hdr_t) + REASON_CAP + text_max + sizeof(status_rec_t);
    if (!send_request(sv[0], &rq, data, deadline) ||
        !read_reply(sv[0], &buf, &got, cap, deadline) || got < sizeof(status_rec_t)) {
        rc = EV_EIO;
        set_reason(reason, ev_strdup("PDF could not be processed: the parse helper did not "
                                     "answer"));
        goto out;
    }
    status_rec_t st;
    memcpy(&st, buf + got - sizeof(st), sizeof(st));
    if (st.magic != STATUS_MAGIC) {
        rc = EV_EIO;
        set_reason(reason, ev_strdup("PDF could not be processed: the parse helper gave no "
                                     "usable answer"));
        goto out;
    }
    out->usage.cpu_us = st.cpu_us;
    out->usage.max_rss_kb = st.max_rss_kb;
    out->usage.wall_ms = mono_ms() - start;
    rc = classify(sb, out, &st, buf, got - sizeof(st), reason);
out:
    if (sv[0] >= 0)
        close(sv[0]);
    free(buf);
    return rc;
}

void ev_sandbox_pdf_clear(ev_sandbox_pdf_t *out)
{
    if (!out)
        return;
    free(out->text);
    memset(out, 0, sizeof(*out));
}
