/*
 * libFuzzer target: nvme_ebs_decode_stats on the raw input, taken as a page of any length.
 *
 * The input is copied into a heap buffer of exactly its length, so ASan reports any read
 * past it; shorter than a page, the buffer is poisoned whole during the call (SHORT must come
 * before any read); longer, everything past 4096 bytes is. The result is checked against the
 * model in reference.h; the call must leave the input alone and give the same answer twice.
 *
 * An empty input is decoded twice: from a zero-byte allocation (what Python passes for b"")
 * and as (NULL, 0), what a C caller may pass.
 *
 * Deliberately broken variants, one -D each, built by fuzz/fuzz.mk as
 * build/fuzz/variant/MACRO/fuzz_stats: FUZZ_SELFTEST_ASAN, _UBSAN, _FENCE and _ORACLE prove
 * that ASan, UBSan, the read fence and the model each catch a fault.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "reference.h"

static void decode_and_check(const uint8_t *data, size_t size, const uint8_t *page)
{
    struct nvme_ebs_stats *out = malloc(sizeof(*out)), *again = malloc(sizeof(*again));
    int rc, rc_again;

    REQUIRE(out != NULL && again != NULL);
    memset(out, FILL_BYTE, sizeof(*out));
    memset(again, FILL_BYTE, sizeof(*again));

    fence_reads(page, size);
#ifdef FUZZ_SELFTEST_FENCE
    /* A decoder that looks at the magic before checking the length. */
    if (size > 0 && size < REF_PAGE) {
        volatile uint8_t first = page[0];
        (void)first;
    }
#endif
    rc = nvme_ebs_decode_stats(page, size, out);
    rc_again = nvme_ebs_decode_stats(page, size, again);
    unfence_reads(page, size);

#ifdef FUZZ_SELFTEST_ORACLE
    /* A decoder that gets one counter wrong. */
    if (rc == NVME_EBS_OK)
        out->total_write_bytes ^= 1;
#endif
    check_stats(page, size, rc, out);
    REQUIRE(rc_again == rc);
    REQUIRE(memcmp(out, again, sizeof(*out)) == 0);
    REQUIRE(size == 0 || memcmp(page, data, size) == 0);
    free(again);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* malloc(0) under ASan is a distinct pointer to no bytes: any read through it is reported. */
    uint8_t *page = malloc(size);

    REQUIRE(page != NULL || size == 0);
    if (size > 0)
        memcpy(page, data, size);
#ifdef FUZZ_SELFTEST_ASAN
    /* One byte past the end, as an off-by-one in the decoder would read. */
    {
        volatile uint8_t past = page[size];
        (void)past;
    }
#endif
#ifdef FUZZ_SELFTEST_UBSAN
    /* An int shifted by 32 or more, the amount taken from the input so it cannot be folded. */
    if (size > 0) {
        volatile int shifted = 1 << (32 + page[0] % 32);
        (void)shifted;
    }
#endif
    decode_and_check(data, size, page);
    /* (NULL, 0) is how a C caller passes an empty buffer (fuzz/crashes/README.md). */
    if (size == 0)
        decode_and_check(data, 0, NULL);
    free(page);
    return 0;
}
