/* The worker's seccomp filter (sandbox.c), installed in a forked child so the rest of the
 * self-test (and the sanitizers' own ptrace at exit) runs without it.  The child reports
 * the first check that failed through its exit status. */
#include "selftest.h"

#include <sched.h>
#include <signal.h>
#include <sys/wait.h>

static int sandboxed_child(pid_t parent) {
    if (ts_sandbox_seccomp(getpid()) != 0)
        return 10;
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
    int udp = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (udp < 0)
        return 17;
    close(udp);
    if (unshare(CLONE_NEWUSER) != -1 || errno != EPERM)
        return 18;
    return 0;
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
