/* libFuzzer target: ts_addrwatch_parse, what one read of the worker's route netlink socket holds
 * (the address groups' notices) -> the addresses they add.  Only the kernel, or a process with
 * CAP_NET_ADMIN, writes there; parsed all the same as bytes from outside.
 *
 * input := max:u8 read:bytes
 *   max low nibble: 0 -> the worker's 16, else 1..15 entries the caller takes
 * The read and the output array are heap blocks of exactly their size. */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    size_t max = data[0] & 15 ? (size_t)(data[0] & 15) : 16;
    size_t n = size - 1;
    uint8_t *buf = malloc(n ? n : 1);
    ts_addr *out = malloc(max * sizeof(*out));
    FUZZ_SETUP(buf && out);
    memcpy(buf, data + 1, n);
    int k = ts_addrwatch_parse(buf, n, out, max);
    if (fz_trace())
        fprintf(stderr, "addrwatch %zu bytes, max %zu -> %d\n", n, max, k);
    FUZZ_ASSERT(k >= 0 && (size_t)k <= max);
    /* each address needs a notice of its own (a 16-byte header at least); one more for the rest */
    FUZZ_ASSERT((size_t)k <= n / 16 + 1);
    static const uint8_t zero[16];
    for (int i = 0; i < k; i++) {
        const ts_addr *a = &out[i];
        FUZZ_ASSERT(a->port == 0);
        /* any (nothing else set), an IPv4 address (in the first 4 bytes), or an IPv6 one */
        FUZZ_ASSERT(a->family == 0 || a->family == 4 || a->family == 6);
        if (a->family == 0)
            FUZZ_ASSERT(memcmp(a->addr, zero, 16) == 0);
        if (a->family == 4)
            FUZZ_ASSERT(memcmp(a->addr + 4, zero, 12) == 0);
    }
    free(out);
    free(buf);
    return 0;
}
