/* tunsec benchmark entry points (consumed by cffi as tunsec.bench._cbench).
 *
 * Not part of the production module tunsec.dataplane._fastpath: they are
 * built into a separate extension that carries its own copy of the fast path
 * (the same csrc/ sources, flags and struct layouts), so a ts_dp made by
 * _fastpath can be handed to them by address (tunsec/bench/micro.py).
 */
#ifndef TUNSEC_BENCH_H
#define TUNSEC_BENCH_H

#include "tunsec_dp.h"

/* benchmarks: the per-packet cost without Python in between.  Run the
 * single-packet path count times on the same input; return how many passed.
 * ts_bench_gcm: OpenSSL's raw AES-GCM (key set up once) sealing buf in place,
 * the reference next to them. */
int ts_bench_outbound(ts_dp *dp, const uint8_t *pkt, size_t len, uint32_t count);
int ts_bench_inbound(ts_dp *dp, const uint8_t *udp, size_t len, uint32_t count);
int ts_bench_gcm(const uint8_t *key, size_t keylen, uint8_t *buf, size_t len, uint32_t count);
int ts_bench_spd_lookup(ts_dp *dp, const uint8_t *pkt, size_t len, uint32_t count, int how);
int ts_bench_sad_lookup(ts_dp *dp, const uint32_t *spis, size_t n, uint32_t count);
int ts_bench_segment(const uint8_t *buf, size_t len, uint32_t count);
int ts_bench_gro(const uint8_t *pkts, const uint32_t *lens, size_t n, uint32_t count);

#endif
