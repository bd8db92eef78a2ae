/*
 * cpuidmask: make a library see an AVX2-only x86-64 CPU (no AVX-512, no VNNI) on a machine
 * that has them, so that its run-time dispatch picks the kernels an AVX2 machine (AMD Zen 3,
 * Intel Haswell..Skylake client) runs. Used to time ONNX Runtime's AVX2 code paths beside
 * burnq's (BURNQ_KERNEL=avx2-maddubs) on a VNNI machine; see README.md.
 *
 * How: patch_cpuid.py rewrites every `cpuid` instruction (0F A2) of the library's code into
 * `int3; nop` (CC 90). This file, loaded with LD_PRELOAD, installs a SIGTRAP handler that
 * recognizes such a site (an `int3`, si_code SI_KERNEL, whose byte before the trapping address
 * is CC and the byte at it 90),
 * executes the real `cpuid` for the leaf/sub-leaf in EAX/ECX, clears the feature bits below,
 * writes EAX..EDX back and resumes after the nop. Any other SIGTRAP is re-raised with the
 * default action. Nothing else changes: the instructions that run are the CPU's own.
 *
 * Cleared (AMX too: ONNX Runtime tests it apart from AVX-512; Intel SDM vol. 2, CPUID; AMD APM vol. 3, E.3.6):
 *   leaf 7.0 EBX: AVX512F 16, DQ 17, IFMA 21, PF 26, ER 27, CD 28, BW 30, VL 31
 *   leaf 7.0 ECX: VBMI 1, VBMI2 6, VNNI 11, BITALG 12, VPOPCNTDQ 14
 *   leaf 7.0 EDX: 4VNNIW 2, 4FMAPS 3, VP2INTERSECT 8, AMX-BF16 22, FP16 23, AMX-TILE 24,
 *                 AMX-INT8 25
 *   leaf 7.1 EAX: AVX-VNNI 4, AVX512_BF16 5, AMX-FP16 21, AVX-IFMA 23
 *   leaf 7.1 EDX: AVX-VNNI-INT8 4, AVX-NE-CONVERT 5, AVX-VNNI-INT16 10, AVX10 19
 *
 * `cpuidmask_hits` counts the emulated calls; a runner can read it (it is a global symbol of
 * the process) to prove the mask was in effect. CPUIDMASK_VERBOSE=1 prints it at exit.
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

long cpuidmask_hits; /* updated atomically: threads may trap at once */

#define BIT(n) (1u << (n))

static void mask(unsigned leaf, unsigned sub, unsigned r[4]) {
    if (leaf == 7 && sub == 0) {
        r[1] &= ~(BIT(16) | BIT(17) | BIT(21) | BIT(26) | BIT(27) | BIT(28) | BIT(30) | BIT(31));
        r[2] &= ~(BIT(1) | BIT(6) | BIT(11) | BIT(12) | BIT(14));
        r[3] &= ~(BIT(2) | BIT(3) | BIT(8) | BIT(22) | BIT(23) | BIT(24) | BIT(25));
    } else if (leaf == 7 && sub == 1) {
        r[0] &= ~(BIT(4) | BIT(5) | BIT(21) | BIT(23));
        r[3] &= ~(BIT(4) | BIT(5) | BIT(10) | BIT(19));
    }
}

static void on_trap(int sig, siginfo_t *info, void *context) {
    greg_t *g = ((ucontext_t *)context)->uc_mcontext.gregs;
    const unsigned char *at = (const unsigned char *)g[REG_RIP];
    /* Only an `int3` (SI_KERNEL) has a byte before RIP that was executed; a trap sent by
     * kill(2) or a debug trap is not ours and is not read through. */
    if (info->si_code != SI_KERNEL || at[-1] != 0xCC || at[0] != 0x90) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    unsigned leaf = (unsigned)g[REG_RAX], sub = (unsigned)g[REG_RCX], r[4];
    __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
    mask(leaf, sub, r);
    g[REG_RAX] = r[0];
    g[REG_RBX] = r[1];
    g[REG_RCX] = r[2];
    g[REG_RDX] = r[3];
    g[REG_RIP] += 1; /* past the nop */
    __atomic_fetch_add(&cpuidmask_hits, 1, __ATOMIC_RELAXED);
}

static void report(void) {
    if (getenv("CPUIDMASK_VERBOSE")) {
        fprintf(stderr, "cpuidmask: %ld cpuid calls emulated without AVX-512/VNNI\n",
                __atomic_load_n(&cpuidmask_hits, __ATOMIC_RELAXED));
    }
}

__attribute__((constructor)) static void install(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_trap;
    action.sa_flags = SA_SIGINFO;
    sigaction(SIGTRAP, &action, NULL);
    atexit(report);
}
