/* The worker's seccomp filter (tunsec/dataplane/sandbox.py installs it once set up).
 *
 * A deny-list, written by hand: the worker parses every packet from the network, so a
 * worker taken over must not execute programs, fork, trace or read other processes, signal
 * or re-limit anything but itself, make namespaces, mounts, BPF programs or perf events,
 * touch keyrings, open sockets, change the descriptors it shares with the spawner and
 * every later worker (ioctl and fcntl are allow-lists), or use the rights its uid has as a
 * file's owner (modes, owners, attributes, times) or as SysV IPC objects' owner.  Everything else the CPython
 * interpreter, OpenSSL and the sanitizers use stays allowed (an allow-list would have
 * to follow all three).  Denied calls return EPERM, never kill: a bug shows as a clear
 * error in the log instead of a vanished worker.  clone3 says ENOSYS, so that glibc
 * falls back to clone(), whose flags (unlike clone3's, in memory) the filter can read.
 *
 * The filter checks the architecture (a 32-bit or x32 call has other numbers: all
 * denied) and is built for the one the module is compiled for, x86_64 or aarch64;
 * elsewhere it is not installed (ENOSYS) and the worker logs that it runs without it.
 * SECCOMP_FILTER_FLAG_TSYNC puts it on every thread of the process.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "tunsec_dp.h"

#if defined(__x86_64__)
#define TS_AUDIT_ARCH AUDIT_ARCH_X86_64
#define TS_X32_BIT 0x40000000u
#elif defined(__aarch64__)
#define TS_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

#ifdef TS_AUDIT_ARCH

#define TS_FILTER_MAX 512
#define RET_ALLOW BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)
#define RET_ERRNO(e) BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ((e) & SECCOMP_RET_DATA))
/* the low 32 bits of an argument: what the kernel reads of an int (pid, family, flags) */
#define ARG_LO(n) (offsetof(struct seccomp_data, args) + 8 * (n))
#define LOAD(off) BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (off))

/* The namespace flags of clone(); CLONE_NEWTIME (0x80) is in clone()'s exit-signal byte, only
 * clone3 and unshare take it, and both are denied. */
#define TS_CLONE_NS (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | \
                     CLONE_NEWPID | CLONE_NEWNET)

static const int denied[] = {
    __NR_execve, __NR_execveat, __NR_ptrace, __NR_process_vm_readv, __NR_process_vm_writev,
    __NR_kcmp, __NR_tkill, __NR_pidfd_open, __NR_pidfd_getfd, __NR_pidfd_send_signal,
    __NR_mount, __NR_umount2, __NR_pivot_root, __NR_chroot, __NR_unshare, __NR_setns,
    __NR_open_tree, __NR_move_mount, __NR_fsopen, __NR_fsconfig, __NR_fsmount, __NR_fspick,
    __NR_mount_setattr, __NR_open_by_handle_at, __NR_name_to_handle_at,
    __NR_bpf, __NR_perf_event_open, __NR_userfaultfd, __NR_fanotify_init,
    __NR_io_uring_setup, __NR_io_uring_enter, __NR_io_uring_register,
    __NR_keyctl, __NR_add_key, __NR_request_key,
    __NR_init_module, __NR_finit_module, __NR_delete_module, __NR_kexec_load, __NR_kexec_file_load,
    __NR_reboot, __NR_swapon, __NR_swapoff, __NR_acct, __NR_quotactl,
#ifdef __NR_uselib
    __NR_uselib,
#endif
};

/* Calls newer than the C library's headers may be (Linux 6.6, 6.13): the same number on both
 * architectures (every call since 424 has one number everywhere).  The kernel has them even
 * where the headers do not, so they are denied by number. */
#ifndef __NR_fchmodat2
#define __NR_fchmodat2 452
#endif
#ifndef __NR_setxattrat
#define __NR_setxattrat 463
#endif
#ifndef __NR_removexattrat
#define __NR_removexattrat 466
#endif

/* The rights of a file's owner need no capability: a worker that keeps uid 0 (user = root) or
 * runs as the service user (no tunsec-dp) would still chmod (set-user-ID) or chown what its uid
 * owns, give it an ACL or extended attribute, or reset its times; Landlock restricts none of
 * these.  The worker needs none of them once set up (it writes no file but an opt-in memory
 * trace, created with open's mode).  SysV IPC: uid 0 also owns root's segments, queues and
 * semaphores (IPC_SET, IPC_RMID, attach); nothing in the worker uses them. */
static const int owners_rights[] = {
#ifdef __NR_chmod
    __NR_chmod,
#endif
#ifdef __NR_chown
    __NR_chown,
#endif
#ifdef __NR_lchown
    __NR_lchown,
#endif
#ifdef __NR_utime
    __NR_utime,
#endif
#ifdef __NR_utimes
    __NR_utimes,
#endif
#ifdef __NR_futimesat
    __NR_futimesat,
#endif
    __NR_fchmodat2, __NR_setxattrat, __NR_removexattrat,
    __NR_fchmod, __NR_fchmodat, __NR_fchown, __NR_fchownat, __NR_utimensat,
    __NR_setxattr, __NR_lsetxattr, __NR_fsetxattr, __NR_removexattr, __NR_lremovexattr,
    __NR_fremovexattr,
    __NR_shmget, __NR_shmat, __NR_shmdt, __NR_shmctl, __NR_msgget, __NR_msgsnd, __NR_msgrcv,
    __NR_msgctl, __NR_semget, __NR_semop, __NR_semtimedop, __NR_semctl,
};

/* signals: only to this process (its pid as first argument; 0 and -1 name groups) */
static const int signalling[] = {__NR_kill, __NR_tgkill, __NR_rt_sigqueueinfo, __NR_rt_tgsigqueueinfo};

/* Calls that change another process of the same uid (its spawner: limits, priority, CPUs)
 * take a pid as first argument: only 0 (itself) or its own pid.  A spawner left with
 * RLIMIT_NPROC 0 or 5 descriptors cannot start the next worker, and tunsec stops. */
static const int own_pid_only[] = {__NR_prlimit64, __NR_sched_setaffinity, __NR_sched_setscheduler,
                                   __NR_sched_setparam, __NR_sched_setattr, __NR_migrate_pages,
                                   __NR_move_pages};

/* What would outlive the worker.  Sockets: it makes none once set up (SEND_IKE uses the ones
 * it was handed), and those it holds are shared with the spawner and every later worker: an
 * option, a filter (SO_ATTACH_FILTER + SO_LOCK_FILTER, drop all), a connect or a shutdown set on
 * them would leave the next worker deaf.  All setsockopt calls of the worker (UDP GRO/GSO,
 * PKTINFO) come before the filter.  fork: a child would keep the TUN after the worker is gone. */
static const int lasting[] = {__NR_socket, __NR_connect, __NR_bind, __NR_shutdown, __NR_setsockopt,
#ifdef __NR_fork
                              __NR_fork,
#endif
#ifdef __NR_vfork
                              __NR_vfork,
#endif
};

/* ioctl: only these requests (the low 32 bits: the kernel reads an unsigned int).  Python and
 * libuv set O_NONBLOCK and FD_CLOEXEC with FIONBIO/FIOCLEX; isatty() (io.open of a late
 * import) is TCGETS; FIONREAD reads.  Everything else is refused: TIOCSTI and TIOCLINUX
 * (typing into the operator's terminal), the TUN's own requests (TUNSETQUEUE detaching a
 * queue, TUNATTACHFILTER, TUNSETIFF...), FIOASYNC and F_SETOWN's ioctl forms. */
static const uint32_t ioctl_allowed[] = {FIONBIO, FIOCLEX, FIONCLEX, TCGETS, FIONREAD};

/* fcntl: duplicating and reading flags; F_SETFL (O_ASYNC, O_NONBLOCK on a shared descriptor),
 * F_SETOWN/F_SETSIG (SIGIO to another process), leases and the rest are refused.  FIONBIO can
 * still clear O_NONBLOCK on a shared descriptor: every worker sets it again at start. */
static const uint32_t fcntl_allowed[] = {F_DUPFD, F_DUPFD_CLOEXEC, F_GETFD, F_SETFD, F_GETFL};

#ifndef PR_SET_VMA
#define PR_SET_VMA 0x53564d41
#endif

/* prctl: only these options (the first argument).  Once set up the worker calls PR_SET_NAME alone
 * (each packet thread names itself, loop.c; pthread_setname_np and libuv's thread pool do the same);
 * PR_GET_NAME and PR_GET_DUMPABLE read (the sanitizers' runtime asks the latter), PR_SET_VMA names
 * its own anonymous memory (glibc's and newer CPythons' map names).  Everything else is refused:
 * PR_SET_PDEATHSIG (cleared, a worker taken over would outlive a control process that was killed,
 * review revpipe F2), PR_SET_DUMPABLE (dumpable again would let another process of the worker's uid
 * read its keys), PR_SET_PTRACER, PR_SET_CHILD_SUBREAPER, PR_SCHED_CORE, PR_SET_MM and the rest. */
static const uint32_t prctl_allowed[] = {PR_SET_NAME, PR_GET_NAME, PR_GET_DUMPABLE, PR_SET_VMA};

static size_t emit(struct sock_filter *f, size_t n, struct sock_filter insn) {
    if (n < TS_FILTER_MAX)
        f[n] = insn;
    return n + 1;
}

static size_t emit_all(struct sock_filter *f, size_t n, const struct sock_filter *insn, size_t count) {
    for (size_t i = 0; i < count; i++)
        n = emit(f, n, insn[i]);
    return n;
}

/* "if nr == x: return errno e", two instructions, so no jump ever goes far */
static size_t deny(struct sock_filter *f, size_t n, int nr, int e) {
    n = emit(f, n, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)nr, 0, 1));
    return emit(f, n, (struct sock_filter)RET_ERRNO(e));
}

/* "if nr == x: allow if the low word of argument arg == value, else EPERM" (the accumulator
 * then holds the argument, so both ends return) */
static size_t only_if(struct sock_filter *f, size_t n, int nr, unsigned arg, uint32_t value) {
    struct sock_filter insn[] = {
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)nr, 0, 4),
        LOAD(ARG_LO(arg)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, value, 0, 1),
        RET_ALLOW,
        RET_ERRNO(EPERM),
    };
    return emit_all(f, n, insn, sizeof insn / sizeof insn[0]);
}

/* "if nr == x: allow if argument arg is 0 or self, else EPERM" */
static size_t self_or_zero(struct sock_filter *f, size_t n, int nr, unsigned arg, uint32_t self) {
    struct sock_filter insn[] = {
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)nr, 0, 5),
        LOAD(ARG_LO(arg)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, self, 1, 0),
        RET_ERRNO(EPERM),
        RET_ALLOW,
    };
    return emit_all(f, n, insn, sizeof insn / sizeof insn[0]);
}

/* "if nr == x: allow if argument which == process (a group or a uid would reach the spawner)
 * and argument who is 0 or self, else EPERM" (setpriority, ioprio_set) */
static size_t self_process(struct sock_filter *f, size_t n, int nr, uint32_t process, uint32_t self) {
    struct sock_filter insn[] = {
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)nr, 0, 7),
        LOAD(ARG_LO(0)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, process, 0, 3),
        LOAD(ARG_LO(1)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, self, 1, 0),
        RET_ERRNO(EPERM),
        RET_ALLOW,
    };
    return emit_all(f, n, insn, sizeof insn / sizeof insn[0]);
}

/* "if nr == x: allow if the low word of argument arg is one of values, else EPERM" */
static size_t one_of(struct sock_filter *f, size_t n, int nr, unsigned arg, const uint32_t *values, size_t count) {
    n = emit(f, n, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)nr, 0, (uint8_t)(count + 3)));
    n = emit(f, n, (struct sock_filter)LOAD(ARG_LO(arg)));
    for (size_t i = 0; i < count; i++)   /* the i-th match jumps over the rest and the EPERM */
        n = emit(f, n, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, values[i], (uint8_t)(count - i), 0));
    n = emit(f, n, (struct sock_filter)RET_ERRNO(EPERM));
    return emit(f, n, (struct sock_filter)RET_ALLOW);
}

/* the architecture check, then the call's number in the accumulator */
static size_t head(struct sock_filter *f, size_t n) {
    struct sock_filter insn[] = {
        LOAD(offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, TS_AUDIT_ARCH, 1, 0),
        RET_ERRNO(EPERM),
        LOAD(offsetof(struct seccomp_data, nr)),
#ifdef TS_X32_BIT
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, TS_X32_BIT, 0, 1),
        RET_ERRNO(EPERM),
#endif
    };
    return emit_all(f, n, insn, sizeof insn / sizeof insn[0]);
}

#define COUNT(a) (sizeof (a) / sizeof (a)[0])

static size_t build(struct sock_filter *f, uint32_t self_pid) {
    size_t n = head(f, 0);
    for (size_t i = 0; i < COUNT(denied); i++)
        n = deny(f, n, denied[i], EPERM);
    for (size_t i = 0; i < COUNT(lasting); i++)
        n = deny(f, n, lasting[i], EPERM);
    for (size_t i = 0; i < COUNT(owners_rights); i++)
        n = deny(f, n, owners_rights[i], EPERM);
    n = deny(f, n, __NR_clone3, ENOSYS);
    for (size_t i = 0; i < COUNT(signalling); i++)
        n = only_if(f, n, signalling[i], 0, self_pid);
    for (size_t i = 0; i < COUNT(own_pid_only); i++)
        n = self_or_zero(f, n, own_pid_only[i], 0, self_pid);
    n = self_process(f, n, __NR_setpriority, 0 /* PRIO_PROCESS */, self_pid);
    n = self_process(f, n, __NR_ioprio_set, 1 /* IOPRIO_WHO_PROCESS */, self_pid);
    n = one_of(f, n, __NR_ioctl, 1, ioctl_allowed, COUNT(ioctl_allowed));
    n = one_of(f, n, __NR_fcntl, 1, fcntl_allowed, COUNT(fcntl_allowed));
    n = one_of(f, n, __NR_prctl, 0, prctl_allowed, COUNT(prctl_allowed));
    struct sock_filter rest[] = {
        /* clone: threads only (a forked child would outlive the worker, holding the TUN and the
         * sockets), never a new namespace */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone, 0, 5),
        LOAD(ARG_LO(0)),
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, TS_CLONE_NS, 1, 0),
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_THREAD, 1, 0),
        RET_ERRNO(EPERM),
        RET_ALLOW,
        RET_ALLOW,
    };
    return emit_all(f, n, rest, COUNT(rest));
}

static int install(struct sock_filter *f, size_t n) {
    if (n > TS_FILTER_MAX)
        return -E2BIG;   /* the list grew past the array: a build error, caught by the self-test */
    struct sock_fprog prog = {.len = (unsigned short)n, .filter = f};
    /* seccomp needs no-new-privs (or CAP_SYS_ADMIN); the worker has it already, set here too */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return -errno;
    long rc = syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog);
    if (rc < 0)
        return -errno;
    return rc > 0 ? -EBUSY : 0;   /* TSYNC: a positive return names a thread that could not take it */
}

int ts_sandbox_seccomp(int self_pid) {
    struct sock_filter f[TS_FILTER_MAX];
    return install(f, build(f, (uint32_t)self_pid));
}

/* Before the event loop exists: io_uring_setup says ENOSYS, so libuv (uvloop) falls back to
 * epoll_ctl instead of making its ring, which the filter above would later leave unusable
 * (libuv aborts) and which could otherwise carry opens and sockets past that filter. */
int ts_sandbox_no_io_uring(void) {
    struct sock_filter f[TS_FILTER_MAX];
    size_t n = head(f, 0);
    n = deny(f, n, __NR_io_uring_setup, ENOSYS);
    n = emit(f, n, (struct sock_filter)RET_ALLOW);
    return install(f, n);
}

#else

int ts_sandbox_seccomp(int self_pid) {
    (void)self_pid;
    return -ENOSYS;
}

int ts_sandbox_no_io_uring(void) {
    return -ENOSYS;
}

#endif
