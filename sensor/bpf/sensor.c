/* Baseliner eBPF sensor: per-cgroup counts aggregated in the kernel.
 *
 * Built and loaded by sensor/probes.py (the only module that imports bcc), which prepends the
 * configuration (#defines for map sizes, BASELINER_NGRAMS and the n-gram orders counted,
 * BASELINER_NGRAM_ORDER_{2,3,4,6}) and replaces the sensitive-prefix
 * placeholder below with generated code; `python -m baseliner.sensor.cli_bpf --print-program` shows the result.
 *
 * Rules this file keeps:
 *  - tracepoints and raw tracepoints only (no kprobes/fentry), and no kernel struct is ever read:
 *    data comes from tracepoint arguments (whose layout BCC takes from the running kernel), from
 *    BPF helpers (bpf_get_current_cgroup_id, bpf_get_current_pid_tgid), from user memory
 *    (syscall arguments such as file names and sockaddrs) and, for the syscalls whose arguments are
 *    read, from the user register frame sys_enter is given (struct pt_regs: the registers the syscall
 *    was made with, in the x86_64 layout of the uapi <asm/ptrace.h>, the same in every kernel);
 *  - the per-syscall path (sys_enter) hashes nothing to count a syscall: a per-CPU cache says which row of
 *    the per-CPU syscall-count array the current task's cgroup has this window (filled, with one cgroup-id
 *    helper call and one hash lookup, when the task, the window or a task's cgroup changed), and the
 *    syscall's counter in that row is incremented; with n-grams, one task-local storage access (the
 *    thread's history; the task pointer, taken once per syscall, is only compared and passed to helpers)
 *    and a slot of the row's n-gram cache for the n-grams the syscall closes; the syscalls whose arguments
 *    are read are tail calls from it, not syscalls:sys_enter_* tracepoints, whose perf handler would run on
 *    every syscall, and only when their program has something to do (args_wanted: an open's flags ask to
 *    write or for a directory, a close while directory fds are tracked);
 *  - nothing is sent per event to user space: everything is a counter in a map;
 *  - two sets of count maps (suffix _0 and _1); ctl[0], the window's epoch, says which set programs write
 *    (its parity); user space increments it, waits for programs in flight, and drains the now inactive set,
 *    so no count is lost;
 *  - a full map is never silent: the miss is counted in the cgroup's `lost` counter, or, when even
 *    that is impossible, in the set's global lost counter.
 */
#include <uapi/linux/ptrace.h>
#include "ngrams.h"

#ifndef MAX_SYSCALL_ROWS /* cgroups with syscall counts in a window (one row of NGRAM_NR_LIMIT counters each) */
#define MAX_SYSCALL_ROWS 512
#endif
#ifndef MAX_ODD_SYSCALLS /* (cgroup, syscall number outside 0 .. NGRAM_NR_LIMIT - 1) pairs in a window */
#define MAX_ODD_SYSCALLS 1024
#endif
#ifndef MAX_NGRAM_ENTRIES
#define MAX_NGRAM_ENTRIES 131072
#endif
#ifndef MAX_CGROUPS
#define MAX_CGROUPS 8192
#endif
#ifndef MAX_PATHS
#define MAX_PATHS 8192
#endif
#ifndef MAX_ENDPOINTS
#define MAX_ENDPOINTS 16384
#endif
#ifndef MAX_SENSITIVE_CWDS /* processes whose working directory is a sensitive one (LRU) */
#define MAX_SENSITIVE_CWDS 4096
#endif
#ifndef MAX_SOCKETS
#define MAX_SOCKETS 65536
#endif
#ifndef BASELINER_NGRAMS
#define BASELINER_NGRAMS 1
#endif
/* The n-gram orders counted (docs/ngram-spec.md, section 2: a sensor may count a subset; the buckets of
 * the others stay empty).  Default: 4 and 6, the orders the default model uses (ProbeConfig.ngram_orders). */
#ifndef BASELINER_NGRAM_ORDER_2
#define BASELINER_NGRAM_ORDER_2 0
#endif
#ifndef BASELINER_NGRAM_ORDER_3
#define BASELINER_NGRAM_ORDER_3 0
#endif
#ifndef BASELINER_NGRAM_ORDER_4
#define BASELINER_NGRAM_ORDER_4 1
#endif
#ifndef BASELINER_NGRAM_ORDER_6
#define BASELINER_NGRAM_ORDER_6 1
#endif
#ifndef BASELINER_SYSCALL_ARGS /* file writes and DNS: the arguments of open*, creat, close, chdir, rename*, link*, ... */
#define BASELINER_SYSCALL_ARGS 1
#endif

#define PATH_LEN 256
#define KIND_EXEC 0
#define KIND_SENSITIVE 1

/* TCP states (include/net/tcp_states.h; stable ABI of the tracepoint) */
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_CLOSE 7
#define TCP_LISTEN 10
#define PROTO_TCP 6
#define FAM_INET 2
#define FAM_INET6 10
#define MSG_PEEK_FLAG 2
#define DNS_PORT 53

/* open flags (uapi, x86_64) */
#define F_WRONLY 01
#define F_RDWR 02
#define F_CREAT 0100
#define F_TRUNC 01000
#define F_APPEND 02000
#define WRITE_INTENT (F_WRONLY | F_RDWR | F_CREAT | F_TRUNC | F_APPEND)
#define F_DIRECTORY 0200000
#define F_PATH 010000000

/* The n-grams one syscall of a cgroup closes, packed in `grams`: for each order n counted, the bucket of that
 * order within the order plus one (g2, g3, g4: 1 .. NGRAM_BUCKETS; g6: 1 .. NGRAM_LONG_BUCKETS) at bit
 * GRAM_SHIFT_n, 0 for "no n-gram of that order" (the order not counted, the thread's history too short).  One
 * map update per syscall that closes any counts all of them; user space sums the counts over the other fields
 * to get each order's bucket counts (probes.py, _drain_set). */
#define GRAM_SHIFT_2 0
#define GRAM_SHIFT_3 13
#define GRAM_SHIFT_4 26
#define GRAM_SHIFT_6 39
struct gram_key {
    u64 cgid;
    u64 grams;
};

/* A syscall number outside the count rows (negative or >= NGRAM_NR_LIMIT): counted by key, rarely used. */
struct odd_key {
    u64 cgid;
    u32 nr;
    u32 pad;
};

/* The counts of one cgroup in one window on one CPU: its syscalls, by number, and, with n-grams, a
 * direct-mapped cache of its n-gram counts (GRAM_SLOTS (grams, count) pairs, grams 0: empty; the slot is taken
 * from the buckets' bits): a syscall whose n-grams are in their slot adds one there, without hashing; one that
 * finds another pair there moves that pair's count to the grams_N map and takes the slot.  User space adds the
 * pairs left in the rows to what it drains from grams_N. */
#define GRAM_SLOTS 128
struct gram_slot {
    u64 grams;
    u64 count;
};
struct sc_row {
    u64 n[NGRAM_NR_LIMIT];
#if BASELINER_NGRAMS
    struct gram_slot g[GRAM_SLOTS];
#endif
};

/* Per-cgroup counters; keep in sync with CG_FIELDS in sensor/probes.py. */
struct cg_counters {
    u64 execs;
    u64 forks;
    u64 exits;
    u64 connects;
    u64 established;
    u64 connects_failed;
    u64 accepts;
    u64 listens;
    u64 bytes_sent;
    u64 bytes_received;
    u64 packets_sent;
    u64 packets_received;
    u64 dns_queries;
    u64 write_opens;
    u64 sensitive_writes;
    u64 unresolved_writes; /* write paths the sensor cannot place: dirfd-relative, after fchdir, too long */
    u64 lost;
    u64 socket_attributed; /* transitions attributed through the socket to another cgroup than current's */
};

struct path_key {
    u64 cgid;
    u32 kind;
    u32 pad;
    char path[PATH_LEN];
};

struct ep_key {
    u64 cgid;
    u8 addr[16];
    u16 port; /* host byte order */
    u8 family;
    u8 inbound;
    u32 pad;
};

/* inbound connection established in softirq, not yet claimed by a process */
struct pending_in {
    u8 addr[16];
    u16 port;
    u8 family;
    u8 pad[5];
};

/* ---- the two sets of count maps ---- */
/* rows[N * MAX_SYSCALL_ROWS + row]: a cgroup's syscall counts on a CPU in set N (one map for both sets: a
   lookup whose map is the same on every path is inlined by the verifier, one choosing between two maps is a
   helper call); row_of_N: cgroup id -> its row on each CPU, plus one (0: none yet on that CPU).  Each CPU takes
   its rows in order, counted in its rows_used[N] (user space reads rows 0 .. the largest count - 1 and resets
   the counts), so no two CPUs ever take a row at once. */
BPF_PERCPU_ARRAY(rows, struct sc_row, 2 * MAX_SYSCALL_ROWS);
BPF_PERCPU_HASH(row_of_0, u64, u64, MAX_SYSCALL_ROWS);
BPF_PERCPU_HASH(row_of_1, u64, u64, MAX_SYSCALL_ROWS);
BPF_PERCPU_ARRAY(rows_used, u32, 2);
BPF_PERCPU_HASH(odd_0, struct odd_key, u64, MAX_ODD_SYSCALLS);
BPF_PERCPU_HASH(odd_1, struct odd_key, u64, MAX_ODD_SYSCALLS);
#if BASELINER_NGRAMS
BPF_PERCPU_HASH(grams_0, struct gram_key, u64, MAX_NGRAM_ENTRIES);
BPF_PERCPU_HASH(grams_1, struct gram_key, u64, MAX_NGRAM_ENTRIES);
#endif
BPF_PERCPU_HASH(cgroups_0, u64, struct cg_counters, MAX_CGROUPS);
BPF_PERCPU_HASH(cgroups_1, u64, struct cg_counters, MAX_CGROUPS);
BPF_HASH(paths_0, struct path_key, u64, MAX_PATHS);
BPF_HASH(paths_1, struct path_key, u64, MAX_PATHS);
BPF_HASH(endpoints_0, struct ep_key, u64, MAX_ENDPOINTS);
BPF_HASH(endpoints_1, struct ep_key, u64, MAX_ENDPOINTS);
BPF_PERCPU_ARRAY(lost_0, u64, 1);
BPF_PERCPU_ARRAY(lost_1, u64, 1);

/* ---- shared state ---- */
/* [0]: the window's epoch (user space increments it at each flip; its parity is the set programs write);
   [1]: task changes, incremented whenever a (task -> cgroup) pair a CPU cached may have become stale: a task
   moved to another cgroup (cgroup_attach_task, cgroup_transfer_tasks) or a thread exited (its task's address
   may be reused by a new task). */
BPF_ARRAY(ctl, u64, 2);
/* Per CPU: the task that made the last syscall counted here, under which epoch and task changes, its cgroup
   and that cgroup's row (NO_ROW: the rows are full this window, the cgroup's syscalls count as lost). */
#define NO_ROW 0xffffffffu
struct cpu_cache {
    u64 task;
    u64 epoch;
    u64 changes;
    u64 cgid;
    u32 row;
    u32 pad;
};
BPF_PERCPU_ARRAY(cpu_cache, struct cpu_cache, 1);
/* syscall nr -> its canonical id (n-grams) and when sys_enter tail-calls its arg_progs program (ARGS_*), filled
   by user space (probes.py, ARG_SYSCALLS and ARGS_WHEN).  A tail call costs more than the checks that can tell,
   in sys_enter, that the program would do nothing: a close while no directory fd is tracked, an open whose
   flags ask neither to write nor for a directory. */
#define ARGS_NEVER 0
#define ARGS_ALWAYS 1
#define ARGS_DIRFDS 2   /* only while sensitive_dirfd or dir_pending may hold entries (dir_entries[0] != 0) */
#define ARGS_FLAGS_SI 3 /* only when the flags in the second argument (si) are counted (open_counted) */
#define ARGS_FLAGS_DX 4 /* the same, flags in the third argument (dx) */
struct sc_info {
    u32 id;
    u32 args;
};
BPF_ARRAY(sysids, struct sc_info, NGRAM_NR_LIMIT);
/* A thread's last ids, in its task-local storage (freed with the thread; user space cannot list it, so
   `threads` counts the histories made minus those deleted at thread exit; summed over CPUs, mod 2^64). */
BPF_TASK_STORAGE(history, struct thread_hist);
BPF_PERCPU_ARRAY(threads, u64, 1);
BPF_HASH(sock_owner, u64, u64, MAX_SOCKETS);   /* socket (opaque) -> cgroup of the connecting task */
BPF_HASH(sock_pending_in, u64, struct pending_in, MAX_SOCKETS);
BPF_PERCPU_ARRAY(scratch, struct path_key, 1);
#if BASELINER_SYSCALL_ARGS
/* A process (tgid) whose working directory lies under a sensitive prefix: the directory as its chdir() named
   it.  Its relative write opens and rename/link targets are writes there.  Inherited at fork.  An empty path
   marks a working directory the sensor does not know (set by fchdir): relative writes there are unresolved. */
struct cwd_path {
    char path[PATH_LEN];
};
BPF_TABLE("lru_hash", u32, struct cwd_path, sensitive_cwd, MAX_SENSITIVE_CWDS);
/* A directory fd a process opened on a sensitive directory (O_DIRECTORY or O_PATH), keyed tgid << 32 | fd:
   a write by a name relative to it, and fchdir() to it, are writes in that directory.  Forgotten at close()
   and when another open returns the same number; an fd the sensor did not see opened (inherited by a child,
   duplicated) stays unknown.  dir_pending holds a thread's directory open between sys_enter and sys_exit. */
BPF_TABLE("lru_hash", u64, struct cwd_path, sensitive_dirfd, MAX_SENSITIVE_CWDS);
BPF_TABLE("lru_hash", u32, struct cwd_path, dir_pending, MAX_SENSITIVE_CWDS);
/* syscall nr -> the program that reads its arguments (arg_<name> below), filled by user space (probes.py) */
BPF_PROG_ARRAY(arg_progs, NGRAM_NR_LIMIT);

/* Scratch of path normalisation: the name as user memory gave it, the normalised name, and where each kept
   component starts in it (a component takes at least two bytes, "/x", so PATH_LEN / 2 starts suffice). */
#define PATH_MASK (PATH_LEN - 1)
#define NORM_COMPONENTS (PATH_LEN / 2)
struct norm_buf {
    char raw[PATH_LEN];
    char out[PATH_LEN];
    u8 comp[NORM_COMPONENTS];
    u32 j, cs, depth; /* normalise()'s positions */
};
BPF_PERCPU_ARRAY(norm_scratch, struct norm_buf, 1);
/* [0]: entries put in sensitive_dirfd and dir_pending minus entries deleted from them, an upper bound of what
   they hold (a put may replace an entry; the LRU maps may evict one).  While it is 0, and so they are empty
   (directory fds of sensitive directories are rare), an open's return and a close skip them. */
BPF_ARRAY(dir_entries, u64, 1);
#endif

/* @SENSITIVE_PREFIXES@ */

static __always_inline u32 active_set(void)
{
    u32 zero = 0;
    u64 *e = ctl.lookup(&zero);
    return e ? (u32)(*e & 1) : 0;
}

/* Invalidates every CPU's cached (task -> cgroup, row). */
static __always_inline void tasks_changed(void)
{
    u32 one = 1;
    u64 *v = ctl.lookup(&one);
    if (v)
        __sync_fetch_and_add(v, 1);
}

static __always_inline void lost_global(u32 set)
{
    u32 zero = 0;
    u64 *v = set ? lost_1.lookup(&zero) : lost_0.lookup(&zero);
    if (v)
        *v += 1;
}

static __always_inline struct cg_counters *cg_get(u32 set, u64 cgid)
{
    struct cg_counters *c = set ? cgroups_1.lookup(&cgid) : cgroups_0.lookup(&cgid);
    if (c)
        return c;
    struct cg_counters zero = {};
    int err = set ? cgroups_1.update(&cgid, &zero) : cgroups_0.update(&cgid, &zero);
    if (err) {
        lost_global(set);
        return 0;
    }
    return set ? cgroups_1.lookup(&cgid) : cgroups_0.lookup(&cgid);
}

static __always_inline void lost_event(u32 set, u64 cgid)
{
    struct cg_counters *c = cg_get(set, cgid);
    if (c)
        c->lost += 1;
}

static __always_inline void threads_add(s64 n)
{
    u32 zero = 0;
    u64 *v = threads.lookup(&zero);
    if (v)
        *v += n;
}

#define CG_ADD(set, cgid, field, n)                                                                  \
    do {                                                                                             \
        struct cg_counters *c_ = cg_get(set, cgid);                                                  \
        if (c_)                                                                                      \
            c_->field += (n);                                                                        \
    } while (0)

static __always_inline void path_add(u32 set, u64 cgid, struct path_key *k)
{
    u64 *v = set ? paths_1.lookup(k) : paths_0.lookup(k);
    if (v) {
        __sync_fetch_and_add(v, 1);
        return;
    }
    u64 one = 1;
    if (set ? paths_1.update(k, &one) : paths_0.update(k, &one))
        lost_event(set, cgid);
}

static __always_inline void endpoint_add(u32 set, struct ep_key *k)
{
    u64 *v = set ? endpoints_1.lookup(k) : endpoints_0.lookup(k);
    if (v) {
        __sync_fetch_and_add(v, 1);
        return;
    }
    u64 one = 1;
    if (set ? endpoints_1.update(k, &one) : endpoints_0.update(k, &one))
        lost_event(set, k->cgid);
}

#if BASELINER_NGRAMS
/* The n-grams that the current thread's syscall with canonical id `id` closes, packed as in struct gram_key
   (only the configured orders; the history is kept whole, 5 ids, whatever they are), and the thread's history
   moved on by one.  0: none. */
static __always_inline u64 ngram_step(struct task_struct *task, u32 set, u64 cgid, u32 id)
{
    struct thread_hist *h = history.task_storage_get(task, 0, 0);
    if (!h) {
        h = history.task_storage_get(task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE); /* zeroed */
        if (!h) {
            lost_event(set, cgid);
            return 0;
        }
        threads_add(1);
        h->p1 = id;
        h->n = 1;
        return 0;
    }
    u32 n = h->n;
    u64 g = 0;
#if BASELINER_NGRAM_ORDER_2
    if (n >= 1)
        g |= (u64)(1 + (gram2(h->p1, id) & (NGRAM_BUCKETS - 1))) << GRAM_SHIFT_2;
#endif
#if BASELINER_NGRAM_ORDER_3
    if (n >= 2)
        g |= (u64)(1 + (gram3(h->p2, h->p1, id) & (NGRAM_BUCKETS - 1))) << GRAM_SHIFT_3;
#endif
#if BASELINER_NGRAM_ORDER_4
    if (n >= 3)
        g |= (u64)(1 + (gram4(h->p3, h->p2, h->p1, id) & (NGRAM_BUCKETS - 1))) << GRAM_SHIFT_4;
#endif
#if BASELINER_NGRAM_ORDER_6
    if (n >= 5) /* no order 5 (spec v2, section 2) */
        g |= (u64)(1 + (gram6(h->p5, h->p4, h->p3, h->p2, h->p1, id) & (NGRAM_LONG_BUCKETS - 1))) << GRAM_SHIFT_6;
#endif
    h->p5 = h->p4;
    h->p4 = h->p3;
    h->p3 = h->p2;
    h->p2 = h->p1;
    h->p1 = id;
    h->n = n < NGRAM_MAX_ORDER - 1 ? n + 1 : NGRAM_MAX_ORDER - 1;
    return g;
}

static __always_inline void grams_add(u32 set, u64 cgid, u64 grams, u64 n)
{
    struct gram_key k = {.cgid = cgid, .grams = grams};
    u64 *v = set ? grams_1.lookup(&k) : grams_0.lookup(&k);
    if (v) {
        *v += n;
        return;
    }
    if (set ? grams_1.update(&k, &n) : grams_0.update(&k, &n))
        CG_ADD(set, cgid, lost, n);
}

/* The n-grams `grams` once more for the cgroup of `row` (NULL: it has no row; straight to grams_N). */
static __always_inline void grams_count(struct sc_row *row, u32 set, u64 cgid, u64 grams)
{
    if (!row) {
        grams_add(set, cgid, grams, 1);
        return;
    }
    u32 i = (u32)((grams >> GRAM_SHIFT_6) ^ (grams >> GRAM_SHIFT_4) ^ (grams >> GRAM_SHIFT_3) ^ grams);
    struct gram_slot *slot = &row->g[i & (GRAM_SLOTS - 1)];
    if (slot->grams == grams) {
        slot->count += 1;
        return;
    }
    if (slot->grams)
        grams_add(set, cgid, slot->grams, slot->count);
    slot->grams = grams;
    slot->count = 1;
}
#endif

/* ---------------- syscalls ---------------- */

/* c = the current task's cgroup and its row on this CPU in set epoch & 1 (taking this CPU's next free row for
   a cgroup without one; NO_ROW when none is left or the cgroup's entry cannot be made: its syscalls are then
   counted as lost).  Only sys_enter runs this, never nested on a CPU (the kernel skips a nested run), so this
   CPU's row count and row entry change under no one else. */
static __always_inline void cache_fill(struct cpu_cache *c, u64 task, u64 epoch, u64 changes)
{
    u32 set = epoch & 1;
    u64 cgid = bpf_get_current_cgroup_id(); /* read after `changes`: a move after it is seen next time */
    c->task = task;
    c->epoch = epoch;
    c->changes = changes;
    c->cgid = cgid;
    c->row = NO_ROW;
    u64 *r = set ? row_of_1.lookup(&cgid) : row_of_0.lookup(&cgid);
    if (!r) {
        u64 none = 0; /* fails when another CPU made the entry first: then it is there */
        set ? row_of_1.insert(&cgid, &none) : row_of_0.insert(&cgid, &none);
        r = set ? row_of_1.lookup(&cgid) : row_of_0.lookup(&cgid);
        if (!r)
            return; /* the map is full */
    }
    if (*r == 0) {
        u32 *used = rows_used.lookup(&set);
        if (!used || *used >= MAX_SYSCALL_ROWS)
            return;
        *used += 1;
        *r = *used; /* the row taken, plus one */
    }
    c->row = (u32)(*r - 1);
}

static __always_inline void odd_add(u32 set, u64 cgid, long nr)
{
    struct odd_key k = {.cgid = cgid, .nr = (u32)nr};
    u64 *v = set ? odd_1.lookup(&k) : odd_0.lookup(&k);
    if (v) {
        *v += 1;
        return;
    }
    u64 one = 1;
    if (set ? odd_1.update(&k, &one) : odd_0.update(&k, &one))
        lost_event(set, cgid);
}

#if BASELINER_SYSCALL_ARGS
/* Whether an open with these flags is counted (file_open does something with it). */
static __always_inline int open_counted(u64 flags)
{
    return (flags & (WRITE_INTENT | F_DIRECTORY | F_PATH)) != 0;
}

/* Whether sys_enter tail-calls the syscall's argument program (`when`: its sc_info.args, not ARGS_NEVER): the
   checks the program itself starts with, made without the tail call.  For an open, one register of the user
   frame (x86_64 layout, as syscall_regs reads it) is read; a frame that cannot be read leaves flags 0, as the
   program would skip it too. */
static __always_inline int args_wanted(struct bpf_raw_tracepoint_args *ctx, u32 when)
{
    if (when == ARGS_ALWAYS)
        return 1;
    if (when == ARGS_DIRFDS) {
        u32 zero = 0;
        u64 *n = dir_entries.lookup(&zero);
        return !n || *n != 0;
    }
    struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
    u64 flags = 0;
    if (when == ARGS_FLAGS_SI)
        bpf_probe_read_kernel(&flags, sizeof(flags), &regs->si);
    else
        bpf_probe_read_kernel(&flags, sizeof(flags), &regs->dx);
    return open_counted((u32)flags);
}
#endif

/* The syscall's counter in its cgroup's row; with n-grams, the n-grams it closes (one count).  A syscall
   without a row is counted in the cgroup's `lost`, once (its n-grams are counted). */
RAW_TRACEPOINT_PROBE(sys_enter)
{
    /* ctx->args[0] is struct pt_regs * (read by the arg_* programs only), ctx->args[1] the syscall number */
    long nr = (long)ctx->args[1];
    u32 zero = 0, one = 1;
    u64 *epochp = ctl.lookup(&zero);
    u64 *changesp = ctl.lookup(&one);
    struct cpu_cache *c = cpu_cache.lookup(&zero);
    if (!epochp || !changesp || !c)
        return 0;
    u64 epoch = *epochp, changes = *changesp;
    /* the current task (one helper call for the cache check and the history; only passed to helpers and
       compared) */
    struct task_struct *cur = (struct task_struct *)bpf_get_current_task_btf();
    u64 task = (u64)cur;
    if (c->task != task || c->epoch != epoch || c->changes != changes)
        cache_fill(c, task, epoch, changes);
    u32 set = epoch & 1;
    u64 cgid = c->cgid;
    u32 row = c->row;
    if (nr < 0 || nr >= NGRAM_NR_LIMIT) { /* outside the id table: not part of the n-gram stream either */
        odd_add(set, cgid, nr);
        return 0;
    }
    struct sc_row *counts = 0;
    if (row == NO_ROW) {
        lost_event(set, cgid);
    } else {
        u32 slot = set * MAX_SYSCALL_ROWS + row;
        counts = rows.lookup(&slot);
        if (counts)
            counts->n[nr & (NGRAM_NR_LIMIT - 1)] += 1;
    }
#if BASELINER_NGRAMS || BASELINER_SYSCALL_ARGS
    u32 idx = (u32)nr;
    struct sc_info *info = sysids.lookup(&idx);
    if (!info)
        return 0;
#endif
#if BASELINER_NGRAMS
    u64 grams = ngram_step(cur, set, cgid, info->id);
    if (grams)
        grams_count(counts, set, cgid, grams);
#endif
#if BASELINER_SYSCALL_ARGS
    if (info->args != ARGS_NEVER && args_wanted(ctx, info->args))
        arg_progs.call(ctx, idx); /* a syscall whose arguments are read: its program */
#endif
    return 0;
}

/* ---------------- processes ---------------- */

/* A task moved to another cgroup: every CPU's cached (task -> cgroup) is checked again. */
TRACEPOINT_PROBE(cgroup, cgroup_attach_task)
{
    tasks_changed();
    return 0;
}

TRACEPOINT_PROBE(cgroup, cgroup_transfer_tasks)
{
    tasks_changed();
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exec)
{
    u32 set = active_set();
    u64 cgid = bpf_get_current_cgroup_id();
    CG_ADD(set, cgid, execs, 1);
    u32 zero = 0;
    struct path_key *k = scratch.lookup(&zero);
    if (!k)
        return 0;
    __builtin_memset(k, 0, sizeof(*k));
    k->cgid = cgid;
    k->kind = KIND_EXEC;
    unsigned short off = args->data_loc_filename & 0xFFFF;
    /* the tracepoint's own record (not a kernel struct) */
    bpf_probe_read_kernel_str(k->path, sizeof(k->path), (char *)args + off);
    path_add(set, cgid, k);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_fork)
{
    u32 set = active_set();
    CG_ADD(set, bpf_get_current_cgroup_id(), forks, 1);
#if BASELINER_SYSCALL_ARGS
    u32 parent = bpf_get_current_pid_tgid() >> 32; /* (current is the forking task) */
    struct cwd_path *cwd = sensitive_cwd.lookup(&parent);
    if (cwd) {
        u32 child = args->child_pid;
        sensitive_cwd.update(&child, cwd);
    }
#endif
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u32 tid = (u32)pid_tgid;
    if (history.task_storage_delete((struct task_struct *)bpf_get_current_task_btf()) == 0)
        threads_add(-1);
    tasks_changed(); /* the task's address may be reused by a task of another cgroup */
    if (tid == (u32)(pid_tgid >> 32)) { /* the thread group leader: the process */
        u32 set = active_set();
        CG_ADD(set, bpf_get_current_cgroup_id(), exits, 1);
#if BASELINER_SYSCALL_ARGS
        sensitive_cwd.delete(&tid);
#endif
    }
    return 0;
}

#if BASELINER_SYSCALL_ARGS
/* ---------------- syscall arguments ---------------- */

#define USER_CS_64 0x33 /* __USER_CS: the 64-bit user code segment */

/* The six arguments of the syscall entering now, into a[0 .. 5], and its return address, into a[6], from the
   user register frame sys_enter gets (x86_64: di, si, dx, r10, r8, r9; ip).  Returns 0, and the syscall is not
   one whose arguments are read, when it comes from a 32-bit code segment. */
static __always_inline int syscall_regs(struct bpf_raw_tracepoint_args *ctx, u64 *a)
{
    struct pt_regs r;
    if (bpf_probe_read_kernel(&r, sizeof(r), (void *)ctx->args[0]))
        return 0;
    if ((u16)r.cs != USER_CS_64)
        return 0;
    a[0] = r.di;
    a[1] = r.si;
    a[2] = r.dx;
    a[3] = r.r10;
    a[4] = r.r8;
    a[5] = r.r9;
    a[6] = r.ip;
    return 1;
}

/* Whether the syscall of syscall_regs() is a native x86_64 one: 0 when it was made by int 0x80 or sysenter (the
   instruction before the return address is not `syscall`, 0f 05), whose numbers and registers are the ia32
   ones; syscalls:sys_enter_* leave those out too.  An instruction that cannot be read (execute-only memory)
   counts as `syscall`.  (A ptrace tracer that moves the return address at the syscall-entry stop can make a
   native syscall look like another: docs/sensor.md, known limits.)  Reading user memory costs: the programs
   ask only once the arguments say there is something to count. */
static __always_inline int native_syscall(const u64 *a)
{
    u8 insn[2];
    if (bpf_probe_read_user(insn, sizeof(insn), (void *)(a[6] - 2)) == 0 && (insn[0] != 0x0f || insn[1] != 0x05))
        return 0;
    return 1;
}

/* The arguments of a native x86_64 syscall (syscall_regs and native_syscall), a[] as syscall_regs fills it. */
static __always_inline int syscall_args(struct bpf_raw_tracepoint_args *ctx, u64 *a)
{
    return syscall_regs(ctx, a) && native_syscall(a);
}

/* ---------------- files ---------------- */

#define AT_FDCWD_ (-100)

/* nb->out = nb->raw (an absolute name, NUL-terminated) normalised as the kernel walks it, without following
   links: repeated '/' collapse, "." components go, ".." drops the component before it ("/.." is "/"), no
   trailing '/'.  One pass over the buffer; the result is never longer than the name.  Returns its length.
   The pass keeps its positions in the map value, not in registers: the verifier then sees them as bounded
   unknowns that are the same on every path into the next byte, instead of one exact constant per path (which
   it would explore one by one, past its complexity limit). */
static __always_inline u32 normalise(struct norm_buf *nb)
{
    volatile u32 *vj = &nb->j, *vcs = &nb->cs, *vdepth = &nb->depth;
    *vj = 1;  /* length of out */
    *vcs = 1; /* start of the component being copied */
    *vdepth = 0; /* components kept */
    nb->out[0] = '/';
#pragma clang loop unroll(disable)
    for (u32 i = 1; i < PATH_LEN; i++) {
        char c = nb->raw[i];
        u32 j = *vj & PATH_MASK;
        if (c != '/' && c != 0) {
            nb->out[j] = c;
            *vj = j + 1;
            continue;
        }
        u32 cs = *vcs & PATH_MASK;
        u32 depth = *vdepth & (NORM_COMPONENTS - 1);
        u32 len = j - cs; /* a component ends */
        if (len == 1 && nb->out[cs] == '.') {
            *vj = cs;
        } else if (len == 2 && nb->out[cs] == '.' && nb->out[(cs + 1) & PATH_MASK] == '.') {
            if (depth > 0) {
                *vdepth = depth - 1;
                cs = nb->comp[(depth - 1) & (NORM_COMPONENTS - 1)];
                *vcs = cs;
            }
            *vj = cs;
        } else if (len > 0) {
            nb->comp[depth] = cs;
            *vdepth = depth + 1;
            if (c == '/') {
                nb->out[j] = '/';
                *vj = j + 1;
                *vcs = j + 1;
            }
        }
        if (c == 0)
            break;
    }
    u32 j = *vj & PATH_MASK;
    if (j > 1 && nb->out[(j - 1) & PATH_MASK] == '/')
        j--; /* "/etc/" is "/etc" */
    return j;
}

/* Whether nb->raw (absolute, NUL-terminated) may need normalising: a '/' followed by '/', '.' or its end.  A plain
   scan, much cheaper per byte than normalise(); most names written to have neither. */
static __always_inline int needs_normalising(struct norm_buf *nb)
{
    char prev = '/';
#pragma clang loop unroll(disable)
    for (u32 i = 1; i < PATH_LEN; i++) {
        char c = nb->raw[i];
        if (c == 0)
            return i > 1 && prev == '/'; /* a trailing '/' goes too */
        if (prev == '/' && (c == '/' || c == '.'))
            return 1;
        prev = c;
    }
    return 0;
}

/* k->path (zeroed) = the absolute name at user address `name`, normalised.  0 if read and normalised;
   1 if it is not absolute (k->path holds its first two bytes); -1 if unreadable; -2 if it fills the buffer (PATH_LEN - 1
   bytes or more: possibly cut short, so its end, and where its ".." lead, is unknown). */
static __always_inline int read_normalised(struct path_key *k, const char *name)
{
    u32 zero = 0;
    struct norm_buf *nb = norm_scratch.lookup(&zero);
    if (!nb)
        return -1;
    long n = bpf_probe_read_user_str(nb->raw, sizeof(nb->raw), name);
    if (n <= 0)
        return -1;
    if (nb->raw[0] != '/') {
        k->path[0] = nb->raw[0];
        k->path[1] = nb->raw[1];
        return 1;
    }
    if (n >= PATH_LEN)
        return -2;
    if (needs_normalising(nb)) {
        u32 len = normalise(nb);
        bpf_probe_read_kernel(k->path, len, nb->out);
    } else {
        bpf_probe_read_kernel(k->path, (u32)(n - 1) & PATH_MASK, nb->raw); /* without the NUL: k is zeroed */
    }
    return 0;
}

static __always_inline int dir_maps_empty(void)
{
    u32 zero = 0;
    u64 *n = dir_entries.lookup(&zero);
    return n && *n == 0;
}

static __always_inline void dir_entry_put(void)
{
    u32 zero = 0;
    u64 *n = dir_entries.lookup(&zero);
    if (n)
        __sync_fetch_and_add(n, 1);
}

static __always_inline void dir_entry_deleted(long err)
{
    u32 zero = 0;
    u64 *n = dir_entries.lookup(&zero);
    if (n && err == 0)
        __sync_fetch_and_add(n, -1);
}

static __always_inline u64 fd_key(int fd)
{
    return (bpf_get_current_pid_tgid() & 0xffffffff00000000ULL) | (u32)fd;
}

/* The directory a relative name lies in, into k->path: under a directory fd, the sensitive directory it was
   opened on; under AT_FDCWD, the process's sensitive working directory.  Returns 0 (k->path is that
   directory), 1 (a directory the sensor cannot place: an unknown directory fd, or a working directory set by
   fchdir() to one) or 2 (a working directory that is not sensitive). */
static __always_inline int relative_dir(struct path_key *k, int dfd)
{
    struct cwd_path *dir;
    if (dfd != AT_FDCWD_) {
        u64 key = fd_key(dfd);
        dir = sensitive_dirfd.lookup(&key);
        if (!dir)
            return 1;
    } else {
        u32 tgid = bpf_get_current_pid_tgid() >> 32;
        dir = sensitive_cwd.lookup(&tgid);
        if (!dir)
            return 2;
        if (dir->path[0] == 0)
            return 1;
    }
    bpf_probe_read_kernel(k->path, sizeof(k->path), dir->path);
    return 0;
}

/* A path written to (opened for writing, or the target of a rename, link or symlink) as a sensitive write
   when it names a sensitive prefix: an absolute path once normalised ("//", "/./", "/../"), or a name
   relative to the working directory of a process whose cwd is a sensitive directory (recorded as that
   directory), or relative to a directory fd opened on a sensitive directory (recorded as that directory).
   Counted as unresolved instead: a relative name under a directory fd the sensor did not see opened on a
   sensitive directory, a relative name after fchdir() to one (until the next absolute chdir), an absolute
   name too long to normalise.
   Symlinks are not followed (docs/security.md). */
static __always_inline void path_written(u32 set, u64 cgid, int dfd, const char *name)
{
    u32 zero = 0;
    struct path_key *k = scratch.lookup(&zero);
    if (!k)
        return;
    __builtin_memset(k, 0, sizeof(*k));
    int r = read_normalised(k, name);
    if (r == -1)
        return;
    if (r == -2) {
        CG_ADD(set, cgid, unresolved_writes, 1);
        return;
    }
    if (r == 1) {
        r = relative_dir(k, dfd);
        if (r == 1) {
            CG_ADD(set, cgid, unresolved_writes, 1);
            return;
        }
        if (r == 2)
            return;
    }
    if (!sensitive_match(k->path))
        return;
    CG_ADD(set, cgid, sensitive_writes, 1);
    k->cgid = cgid;
    k->kind = KIND_SENSITIVE;
    path_add(set, cgid, k);
}

/* A directory opened (O_DIRECTORY or O_PATH) on a sensitive directory: noted for its sys_exit, which maps the
   fd it returns. */
static __always_inline void dir_open(int dfd, const char *name)
{
    u32 zero = 0;
    struct path_key *k = scratch.lookup(&zero);
    if (!k)
        return;
    __builtin_memset(k, 0, sizeof(*k));
    int r = read_normalised(k, name);
    if (r < 0)
        return;
    if (r == 1 && relative_dir(k, dfd) != 0)
        return;
    if (!sensitive_match(k->path))
        return;
    u32 tid = bpf_get_current_pid_tgid();
    dir_entry_put();
    dir_pending.update(&tid, (struct cwd_path *)k->path);
}

/* An open returned: the fd it returns names what it opened now (a directory noted by dir_open, or not one). */
static __always_inline void file_opened(long ret)
{
    if (dir_maps_empty())
        return;
    u32 tid = bpf_get_current_pid_tgid();
    struct cwd_path *dir = dir_pending.lookup(&tid);
    if (ret < 0) {
        if (dir)
            dir_entry_deleted(dir_pending.delete(&tid));
        return;
    }
    u64 key = fd_key((int)ret);
    if (dir) {
        dir_entry_put();
        sensitive_dirfd.update(&key, dir);
        dir_entry_deleted(dir_pending.delete(&tid));
    } else {
        dir_entry_deleted(sensitive_dirfd.delete(&key));
    }
}

static __always_inline void file_open(int dfd, const char *filename, u64 flags)
{
    if (!(flags & WRITE_INTENT)) {
        if (flags & (F_DIRECTORY | F_PATH))
            dir_open(dfd, filename);
        return;
    }
    u32 set = active_set();
    u64 cgid = bpf_get_current_cgroup_id();
    CG_ADD(set, cgid, write_opens, 1);
    path_written(set, cgid, dfd, filename);
}

static __always_inline void link_target(int dfd, const char *newname)
{
    path_written(active_set(), bpf_get_current_cgroup_id(), dfd, newname);
}

/* The programs below are the arg_progs entries of their syscalls: sys_enter tail-calls them after counting
   the syscall.  a[] holds the syscall's arguments (syscall_regs). */

int arg_openat(struct bpf_raw_tracepoint_args *ctx)
{
    u64 a[7];
    if (syscall_regs(ctx, a) && open_counted((u32)a[2]) && native_syscall(a))
        file_open((int)a[0], (const char *)a[1], (u32)a[2]);
    return 0;
}

int arg_open(struct bpf_raw_tracepoint_args *ctx)
{
    u64 a[7];
    if (syscall_regs(ctx, a) && open_counted((u32)a[1]) && native_syscall(a))
        file_open(AT_FDCWD_, (const char *)a[0], (u32)a[1]);
    return 0;
}

int arg_creat(struct bpf_raw_tracepoint_args *ctx)
{
    u64 a[7];
    if (syscall_args(ctx, a))
        file_open(AT_FDCWD_, (const char *)a[0], F_CREAT | F_WRONLY | F_TRUNC);
    return 0;
}

int arg_openat2(struct bpf_raw_tracepoint_args *ctx)
{
    u64 a[7];
    if (!syscall_args(ctx, a))
        return 0;
    u64 flags = 0; /* struct open_how is user memory; flags is its first member */
    bpf_probe_read_user(&flags, sizeof(flags), (void *)a[2]);
    file_open((int)a[0], (const char *)a[1], flags);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_openat)
{
    file_opened(args->ret);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_open)
{
    file_opened(args->ret);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_openat2)
{
    file_opened(args->ret);
    return 0;
}

int arg_close(struct bpf_raw_tracepoint_args *ctx)
{
    u64 a[7];
    if (dir_maps_empty() || !syscall_args(ctx, a))
        return 0;
    u64 key = fd_key((int)a[0]);
    dir_entry_deleted(sensitive_dirfd.delete(&key));
    return 0;
}

/* The working directory, as chdir() names it (an absolute name normalised): a sensitive directory marks the
   process; another absolute one, one too long to normalise, or a relative one leaving a known directory with
   "..", unmarks it; another relative one stays inside (the mark stays). */
int arg_chdir(struct bpf_raw_tracepoint_args *ctx)
{
    u64 a[7];
    if (!syscall_args(ctx, a))
        return 0;
    u32 zero = 0;
    struct path_key *k = scratch.lookup(&zero);
    if (!k)
        return 0;
    __builtin_memset(k, 0, sizeof(*k));
    int r = read_normalised(k, (const char *)a[0]);
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (r == -1)
        return 0;
    if (r == -2) {
        sensitive_cwd.delete(&tgid);
    } else if (r == 0) {
        if (sensitive_match(k->path))
            sensitive_cwd.update(&tgid, (struct cwd_path *)k->path);
        else
            sensitive_cwd.delete(&tgid);
    } else if (k->path[0] == '.' && k->path[1] == '.') {
        struct cwd_path *cwd = sensitive_cwd.lookup(&tgid);
        if (cwd && cwd->path[0] != 0)
            sensitive_cwd.delete(&tgid);
    }
    return 0;
}

/* fchdir() names a directory fd: one opened on a sensitive directory marks the process with that directory;
   any other makes the working directory unknown (an empty mark) until the next absolute chdir(), and relative
   writes meanwhile count as unresolved. */
int arg_fchdir(struct bpf_raw_tracepoint_args *ctx)
{
    u64 a[7];
    if (!syscall_args(ctx, a))
        return 0;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    u64 key = fd_key((int)a[0]);
    struct cwd_path *dir = sensitive_dirfd.lookup(&key);
    if (dir) {
        sensitive_cwd.update(&tgid, dir);
        return 0;
    }
    u32 zero = 0;
    struct path_key *k = scratch.lookup(&zero);
    if (!k)
        return 0;
    __builtin_memset(k, 0, sizeof(*k));
    sensitive_cwd.update(&tgid, (struct cwd_path *)k->path);
    return 0;
}

/* What a rename, link or symlink creates is written where its new name says (O_TMPFILE + linkat too). */
int arg_rename(struct bpf_raw_tracepoint_args *ctx)
{
    u64 a[7];
    if (syscall_args(ctx, a))
        link_target(AT_FDCWD_, (const char *)a[1]);
    return 0;
}

int arg_renameat(struct bpf_raw_tracepoint_args *ctx)
{
    u64 a[7];
    if (syscall_args(ctx, a))
        link_target((int)a[2], (const char *)a[3]);
    return 0;
}

int arg_renameat2(struct bpf_raw_tracepoint_args *ctx)
{
    u64 a[7];
    if (syscall_args(ctx, a))
        link_target((int)a[2], (const char *)a[3]);
    return 0;
}

int arg_link(struct bpf_raw_tracepoint_args *ctx)
{
    u64 a[7];
    if (syscall_args(ctx, a))
        link_target(AT_FDCWD_, (const char *)a[1]);
    return 0;
}

int arg_linkat(struct bpf_raw_tracepoint_args *ctx)
{
    u64 a[7];
    if (syscall_args(ctx, a))
        link_target((int)a[2], (const char *)a[3]);
    return 0;
}

int arg_symlink(struct bpf_raw_tracepoint_args *ctx)
{
    u64 a[7];
    if (syscall_args(ctx, a))
        link_target(AT_FDCWD_, (const char *)a[1]);
    return 0;
}

int arg_symlinkat(struct bpf_raw_tracepoint_args *ctx)
{
    u64 a[7];
    if (syscall_args(ctx, a))
        link_target((int)a[1], (const char *)a[2]);
    return 0;
}

#endif /* BASELINER_SYSCALL_ARGS */

/* ---------------- network ---------------- */

static __always_inline void ep_from_tp(struct ep_key *k, u16 family, const u8 *a4, const u8 *a6)
{
    k->family = (u8)family;
    if (family == FAM_INET) {
        __builtin_memcpy(k->addr, a4, 4);
    } else {
        __builtin_memcpy(k->addr, a6, 16);
    }
}

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != PROTO_TCP)
        return 0;
    int olds = args->oldstate, news = args->newstate;
    u64 sk = (u64)args->skaddr; /* an opaque key: never dereferenced */
    u64 cur = bpf_get_current_cgroup_id();
    u32 set = active_set();

    if (olds == TCP_CLOSE && news == TCP_SYN_SENT) {
        /* connect(): process context, the current task owns the socket */
        if (sock_owner.update(&sk, &cur))
            lost_event(set, cur);
        CG_ADD(set, cur, connects, 1);
        struct ep_key k = {.cgid = cur, .port = args->dport, .inbound = 0};
        ep_from_tp(&k, args->family, args->daddr, args->daddr_v6);
        endpoint_add(set, &k);
        return 0;
    }
    if (olds == TCP_SYN_SENT) {
        /* usually softirq (SYN-ACK or RST arrival, timeout): attribute through the socket */
        u64 *owner = sock_owner.lookup(&sk);
        u64 cgid = owner ? *owner : cur;
        if (owner && *owner != cur)
            CG_ADD(set, cgid, socket_attributed, 1);
        if (news == TCP_ESTABLISHED)
            CG_ADD(set, cgid, established, 1);
        else if (news == TCP_CLOSE)
            CG_ADD(set, cgid, connects_failed, 1);
        sock_owner.delete(&sk);
        return 0;
    }
    if (olds == TCP_CLOSE && news == TCP_LISTEN) {
        CG_ADD(set, cur, listens, 1); /* listen(): process context */
        return 0;
    }
    if (olds == TCP_SYN_RECV && news == TCP_ESTABLISHED) {
        /* an inbound connection completes in softirq: remember it until a process uses the socket */
        struct pending_in p = {.port = args->dport, .family = (u8)args->family};
        if (args->family == FAM_INET)
            __builtin_memcpy(p.addr, args->daddr, 4);
        else
            __builtin_memcpy(p.addr, args->daddr_v6, 16);
        if (sock_pending_in.update(&sk, &p))
            lost_global(set); /* softirq: no cgroup to charge yet */
        return 0;
    }
    if (news == TCP_CLOSE) {
        sock_pending_in.delete(&sk);
        sock_owner.delete(&sk);
    }
    return 0;
}

/* An inbound connection is counted as accepted by the cgroup whose process first sends or receives
 * on it (process context), with its remote endpoint. */
static __always_inline void claim_inbound(u32 set, u64 cgid, u64 sk)
{
    struct pending_in *p = sock_pending_in.lookup(&sk);
    if (!p)
        return;
    CG_ADD(set, cgid, accepts, 1);
    struct ep_key k = {.cgid = cgid, .port = p->port, .family = p->family, .inbound = 1};
    __builtin_memcpy(k.addr, p->addr, 16);
    endpoint_add(set, &k);
    sock_pending_in.delete(&sk);
}

TRACEPOINT_PROBE(sock, sock_send_length)
{
    if (args->family != FAM_INET && args->family != FAM_INET6)
        return 0;
    u32 set = active_set();
    u64 cgid = bpf_get_current_cgroup_id();
    claim_inbound(set, cgid, (u64)args->sk);
    if (args->ret > 0) {
        struct cg_counters *c = cg_get(set, cgid);
        if (c) {
            c->bytes_sent += args->ret;
            c->packets_sent += 1;
        }
    }
    return 0;
}

TRACEPOINT_PROBE(sock, sock_recv_length)
{
    if (args->family != FAM_INET && args->family != FAM_INET6)
        return 0;
    u32 set = active_set();
    u64 cgid = bpf_get_current_cgroup_id();
    claim_inbound(set, cgid, (u64)args->sk);
    if (args->ret > 0 && !(args->flags & MSG_PEEK_FLAG)) {
        struct cg_counters *c = cg_get(set, cgid);
        if (c) {
            c->bytes_received += args->ret;
            c->packets_received += 1;
        }
    }
    return 0;
}

#if BASELINER_SYSCALL_ARGS
/* DNS: a connect() or sendto() to remote port 53 (user-space sockaddr, AF_INET/AF_INET6) of a native syscall
   (a[] from syscall_regs). */
static __always_inline void dns_check(const u64 *a, const void *uaddr)
{
    if (!uaddr)
        return;
    u16 hdr[2] = {}; /* sa_family, then the port (network byte order) for inet families */
    if (bpf_probe_read_user(hdr, sizeof(hdr), uaddr))
        return;
    if (hdr[0] != FAM_INET && hdr[0] != FAM_INET6)
        return;
    if (bpf_ntohs(hdr[1]) != DNS_PORT || !native_syscall(a))
        return;
    CG_ADD(active_set(), bpf_get_current_cgroup_id(), dns_queries, 1);
}

int arg_connect(struct bpf_raw_tracepoint_args *ctx)
{
    u64 a[7];
    if (syscall_regs(ctx, a))
        dns_check(a, (const void *)a[1]);
    return 0;
}

int arg_sendto(struct bpf_raw_tracepoint_args *ctx)
{
    u64 a[7];
    if (syscall_regs(ctx, a))
        dns_check(a, (const void *)a[4]);
    return 0;
}
#endif /* BASELINER_SYSCALL_ARGS */
