/*
 * libFuzzer target, structure-aware: a short input is read as a recipe for a statistics page,
 * so that mutations land on the things the decoder checks (magic, num_bins, each bin's edges
 * relative to its neighbour) instead of on 4 KiB of mostly reserved bytes.
 *
 * What the input does not say comes out valid: an empty input gives an EBS page with two
 * 28-bin power-of-two histograms whose last bin is open. Each byte then bends one thing:
 *
 *   control byte   bits 0-1 magic: EBS, EBS, instance store, or 4 raw bytes that follow
 *                  bit 2    a version (4 bytes) follows, else 0
 *                  bit 3    eleven counters (8 bytes each) follow, else small distinct values
 *                  bit 4    a filler byte follows for the reserved areas and the unused bins
 *   per histogram  a num_bins byte: 0-66 as is, 0xF8-0xFF special values (huge, 2^32 + 28...),
 *                  anything else modulo 67; then per bin one op byte:
 *                  bits 0-1 lower: previous upper, previous upper - 1, 1-4 above it (bits 5-6), 8 raw bytes
 *                  bits 2-4 upper: doubling (x3), lower + 1, lower, lower - 1, 0, all ones / raw
 *                  bit 5    with upper kind 7: 8 raw bytes instead of all ones
 *                  bit 6    the bin's reserved u32 gets the filler pattern
 *                  bit 7    a count (4 bytes) follows, else the bin index
 *
 * The page (exactly 4096 bytes on the heap) is decoded and checked against reference.h.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "reference.h"

struct recipe {
    const uint8_t *p;
    size_t left;
};

static int exhausted(const struct recipe *r)
{
    return r->left == 0;
}

static uint64_t take(struct recipe *r, unsigned bytes, uint64_t dflt)
{
    uint64_t v = 0;
    unsigned k;

    if (r->left < bytes) {
        r->left = 0;
        return dflt;
    }
    for (k = 0; k < bytes; k++)
        v |= (uint64_t)r->p[k] << (8 * k);
    r->p += bytes;
    r->left -= bytes;
    return v;
}

static void put(uint8_t *page, size_t off, uint64_t v, unsigned bytes)
{
    unsigned k;

    for (k = 0; k < bytes; k++)
        page[off + k] = (uint8_t)(v >> (8 * k));
}

static uint64_t num_bins_from(uint8_t b)
{
    switch (b) {
    case 0xFF:
        return UINT64_MAX;
    case 0xFE:
        return (uint64_t)1 << 63;
    case 0xFD:
        return (uint64_t)1 << 32; /* 0 in a 32-bit count */
    case 0xFC:
        return ((uint64_t)1 << 32) + 28; /* 28 in a 32-bit count */
    case 0xFB:
        return 0x80000000u; /* negative in an int */
    case 0xFA:
        return 65;
    case 0xF9:
        return 64;
    case 0xF8:
        return 28;
    default:
        return b <= 66 ? b : b % 67;
    }
}

static void build_histogram(struct recipe *r, uint8_t *page, size_t off, uint8_t filler)
{
    uint64_t n = num_bins_from((uint8_t)take(r, 1, 28));
    uint64_t prev_upper = 0, i, bins = n < 64 ? n : 64;

    put(page, off, n, 8);
    for (i = 0; i < bins; i++) {
        size_t at = off + 8 + (size_t)i * 24;
        int last = i + 1 == bins;
        /* Past the input, bins continue the valid pattern and the last one is open. */
        uint8_t op = exhausted(r) ? (last ? 0x18 : 0x00) : (uint8_t)take(r, 1, 0);
        uint64_t lower, upper;

        switch (op & 3) {
        case 0:
            lower = prev_upper;
            break;
        case 1:
            lower = prev_upper - 1; /* overlaps the previous bin; wraps to all ones from 0 */
            break;
        case 2:
            lower = prev_upper + 1 + ((op >> 5) & 3);
            break;
        default:
            lower = take(r, 8, prev_upper);
            break;
        }
        switch ((op >> 2) & 7) {
        case 0:
        case 1:
        case 2:
            upper = lower == 0 ? 1 : lower > UINT64_MAX / 2 ? UINT64_MAX : lower * 2;
            break;
        case 3:
            upper = lower + 1;
            break;
        case 4:
            upper = lower;
            break;
        case 5:
            upper = lower - 1;
            break;
        case 6:
            upper = 0;
            break;
        default:
            upper = op & 0x20 ? take(r, 8, UINT64_MAX) : UINT64_MAX;
            break;
        }
        /* op 0x18 (upper kind 6) is how an exhausted recipe closes with an open bin. */
        put(page, at, lower, 8);
        put(page, at + 8, upper, 8);
        put(page, at + 16, op & 0x80 ? take(r, 4, i) : i, 4);
        put(page, at + 20, op & 0x40 ? (uint64_t)filler * 0x01010101u : 0, 4);
        prev_upper = upper;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct recipe r = {data, size};
    uint8_t *page = malloc(REF_PAGE);
    struct nvme_ebs_stats *out = malloc(sizeof(*out));
    uint8_t control, filler;
    uint32_t magic;
    unsigned k;
    int rc;

    REQUIRE(page != NULL && out != NULL);
    control = (uint8_t)take(&r, 1, 0);
    switch (control & 3) {
    case 2:
        magic = NVME_EBS_MAGIC_INSTANCE_STORE;
        break;
    case 3:
        magic = (uint32_t)take(&r, 4, NVME_EBS_MAGIC_EBS);
        break;
    default:
        magic = NVME_EBS_MAGIC_EBS;
        break;
    }
    filler = 0;
    if (control & 16)
        filler = (uint8_t)take(&r, 1, 0);
    memset(page, filler, REF_PAGE);
    put(page, 0, magic, 4);
    put(page, 4, control & 4 ? take(&r, 4, 0) : 0, 4);
    for (k = 0; k < 11; k++)
        put(page, REF_COUNTERS + 8 * k, control & 8 ? take(&r, 8, 0) : 1000u * (k + 1) + k, 8);
    build_histogram(&r, page, REF_HIST_READ, filler);
    build_histogram(&r, page, REF_HIST_WRITE, filler);

    memset(out, FILL_BYTE, sizeof(*out));
    rc = nvme_ebs_decode_stats(page, REF_PAGE, out);
    check_stats(page, REF_PAGE, rc, out);
    free(out);
    free(page);
    return 0;
}
