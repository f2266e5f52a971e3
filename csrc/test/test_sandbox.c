/* The worker's seccomp filter (sandbox.c), installed in a forked child so the rest of the
 * self-test (and the sanitizers' own ptrace at exit) runs without it.  The child reports
 * the first check that failed through its exit status. */
#include "selftest.h"

#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/xattr.h>

static void *thread_main(void *arg) {
    return arg;
}

/* What outlives the worker or reaches past it: its descriptors shared with the spawner and
 * later workers, the terminal, its spawner's limits, a forked child. */
static int shared_state(pid_t parent, int udp) {
    int one = 1;
    if (setsockopt(udp, SOL_SOCKET, SO_RCVBUF, &one, sizeof one) != -1 || errno != EPERM)
        return 20;
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(9), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(udp, (struct sockaddr *)&to, sizeof to) != -1 || errno != EPERM)
        return 21;
    if (shutdown(udp, SHUT_RD) != -1 || errno != EPERM)
        return 22;
    if (fcntl(udp, F_SETFL, O_NONBLOCK) != -1 || errno != EPERM)
        return 23;
    if (fcntl(udp, F_GETFL) < 0 || fcntl(udp, F_SETFD, FD_CLOEXEC) != 0)
        return 24;
    if (ioctl(udp, FIONBIO, &one) != 0)   /* Python's and libuv's setblocking */
        return 25;
    char c = 'x';   /* refused before the descriptor is looked at: EPERM, not EBADF */
    if (ioctl(-1, TIOCSTI, &c) != -1 || errno != EPERM)
        return 26;
    if (ioctl(-1, TIOCLINUX, &c) != -1 || errno != EPERM)
        return 27;
    if (ioctl(udp, FIOASYNC, &one) != -1 || errno != EPERM)
        return 28;
    struct rlimit lim;
    if (prlimit(parent, RLIMIT_NOFILE, NULL, &lim) != -1 || errno != EPERM)
        return 29;
    if (prlimit(0, RLIMIT_NOFILE, NULL, &lim) != 0 || prlimit(getpid(), RLIMIT_NOFILE, NULL, &lim) != 0)
        return 30;
    if (setpriority(PRIO_PROCESS, (id_t)parent, 0) != -1 || errno != EPERM)
        return 31;
    if (setpriority(PRIO_USER, 0, 0) != -1 || errno != EPERM)   /* every process of its uid */
        return 32;
    if (setpriority(PRIO_PROCESS, 0, getpriority(PRIO_PROCESS, 0)) != 0)
        return 33;
    pid_t child = fork();
    if (child == 0)
        _exit(0);
    if (child != -1 || errno != EPERM)
        return 34;
    pthread_t t;   /* threads: clone with CLONE_THREAD (clone3 says ENOSYS, glibc falls back) */
    if (pthread_create(&t, NULL, thread_main, NULL) != 0 || pthread_join(t, NULL) != 0)
        return 35;
    return 0;
}

/* prctl: what outlives a killed control process (the parent-death signal cleared, review revpipe
 * F2) or opens the worker to others (dumpable, a ptracer, a subreaper) is refused; a packet thread
 * still names itself (loop.c) and reads what it is. */
static int prctls(void) {
    if (prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0) != -1 || errno != EPERM)
        return 60;
    if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != -1 || errno != EPERM)
        return 61;
    if (prctl(PR_SET_PTRACER, 0, 0, 0, 0) != -1 || errno != EPERM)
        return 62;
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != -1 || errno != EPERM)
        return 63;
    int sig = -1;   /* reading it is refused too: nothing the worker needs */
    if (prctl(PR_GET_PDEATHSIG, &sig, 0, 0, 0) != -1 || errno != EPERM)
        return 64;
    char name[16] = {0};
    if (prctl(PR_SET_NAME, "tunsec-q9", 0, 0, 0) != 0 || prctl(PR_GET_NAME, name, 0, 0, 0) != 0 ||
        strcmp(name, "tunsec-q9") != 0)
        return 65;
    if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0)   /* the child made itself non-dumpable before */
        return 66;
    return 0;
}

/* What its uid may do as an owner, without a capability (review revlate8 F1): modes, owners,
 * attributes and times of its own files, and SysV IPC objects.  Each refused with EPERM,
 * before the path or descriptor is looked at; the file keeps its mode. */
static int owners_rights(const char *path, int fd) {
    const struct timespec times[2] = {{0, 0}, {0, 0}};
    if (chmod(path, 04755) != -1 || errno != EPERM)
        return 40;
    if (fchmod(fd, 0666) != -1 || errno != EPERM)
        return 41;
    if (fchmodat(AT_FDCWD, path, 0666, 0) != -1 || errno != EPERM)
        return 42;
    if (syscall(452 /* fchmodat2 */, AT_FDCWD, path, 0666, 0) != -1 || errno != EPERM)
        return 43;
    if (fchown(fd, getuid(), getgid()) != -1 || errno != EPERM)
        return 44;
    if (lchown(path, getuid(), getgid()) != -1 || errno != EPERM)
        return 45;
    if (utimensat(AT_FDCWD, path, times, 0) != -1 || errno != EPERM)
        return 46;
    if (fsetxattr(fd, "user.tunsec", "x", 1, 0) != -1 || errno != EPERM)
        return 47;
    if (removexattr(path, "user.tunsec") != -1 || errno != EPERM)
        return 48;
    if (shmctl(0, IPC_RMID, NULL) != -1 || errno != EPERM)
        return 49;
    struct stat st;
    if (fstat(fd, &st) != 0 || (st.st_mode & 07777) != 0600)
        return 50;
    return 0;
}

static int sandboxed_child(pid_t parent) {
    int udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);   /* as the worker is handed them */
    if (udp < 0)
        return 9;
    char path[] = "/tmp/tunsec-selftest-sandbox-XXXXXX";
    int fd = mkstemp(path);   /* 0600, its own */
    if (fd < 0)
        return 8;
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0 || prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        return 7;   /* as the worker is, before its filter */
    int rc = ts_sandbox_seccomp(getpid()) != 0 ? 10 : owners_rights(path, fd);
    unlink(path);
    if (rc != 0 || (rc = prctls()) != 0)
        return rc;
    char *argv[] = {"/bin/false", NULL};   /* run, it would exit 1: the check fails either way */
    if (execve("/bin/false", argv, NULL) != -1 || errno != EPERM)
        return 11;
    if (kill(parent, 0) != -1 || errno != EPERM)   /* its spawner: same uid, still refused */
        return 12;
    if (kill(0, 0) != -1 || errno != EPERM)        /* its process group */
        return 13;
    if (kill(getpid(), 0) != 0)                    /* itself: allowed (raise, abort) */
        return 14;
    if (socket(AF_NETLINK, SOCK_RAW, 0) != -1 || errno != EPERM)
        return 15;
    if (socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0) != -1 || errno != EPERM)
        return 16;
    if (socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0) != -1 || errno != EPERM)   /* none once set up */
        return 17;
    if (unshare(CLONE_NEWUSER) != -1 || errno != EPERM)
        return 18;
    return shared_state(parent, udp);
}

void test_sandbox_seccomp(void) {
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    FATAL_IF(pid < 0);
    if (pid == 0)
        _exit(sandboxed_child(parent));
    int status = 0;
    FATAL_IF(waitpid(pid, &status, 0) != pid);
    CHECK(WIFEXITED(status));
    if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
        fprintf(stderr, "sandboxed child failed check %d\n", WEXITSTATUS(status));
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}
