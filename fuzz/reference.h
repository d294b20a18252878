/*
 * The fuzz targets' oracle: an independent model of what the decoders in
 * csrc/nvme_ebs.c promise (csrc/nvme_ebs.h and the layout table of
 * docs/ebs-nvme-reference.md), and checks that abort() when the real decoder
 * disagrees with it or breaks an invariant the Python layer relies on.
 *
 * It reads the page its own way (byte loops at absolute offsets, not the
 * decoder's helpers) so that one mistake is not shared by both.
 */
#ifndef FUZZ_REFERENCE_H
#define FUZZ_REFERENCE_H

#include <sanitizer/asan_interface.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nvme_ebs.h"

#define REQUIRE(cond)                                                                          \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "FUZZ INVARIANT FAILED: %s at %s:%d\n", #cond, __FILE__, __LINE__); \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

/* Byte pattern `out` is filled with before a decode: a field the decoder should have set and
 * did not shows up as a mismatch against the model. */
#define FILL_BYTE 0xA5

/* Absolute offsets from the layout table. */
#define REF_PAGE 4096u
#define REF_COUNTERS 8u
#define REF_HIST_READ 512u
#define REF_HIST_WRITE 2056u
#define REF_BIN 24u

static inline uint64_t ref_le(const uint8_t *page, size_t off, unsigned width)
{
    uint64_t v = 0;
    unsigned k;

    for (k = width; k > 0; k--)
        v = (v << 8) | page[off + k - 1];
    return v;
}

/* What the decoder must answer for a page: the code, where it failed, and on a histogram
 * error the values the Python error message quotes. */
struct ref_result {
    int rc;
    int error_histogram;
    int error_bin;
};

static inline struct ref_result ref_decode_stats(const uint8_t *page, size_t len)
{
    static const size_t hist_off[2] = {REF_HIST_READ, REF_HIST_WRITE};
    struct ref_result r = {NVME_EBS_OK, -1, -1};
    uint32_t magic;
    int h;

    if (len < REF_PAGE) {
        r.rc = NVME_EBS_ERR_SHORT;
        return r;
    }
    magic = (uint32_t)ref_le(page, 0, 4);
    if (magic != 0x3C23B510u && magic != 0xEC2C0D7Eu) {
        r.rc = NVME_EBS_ERR_MAGIC;
        return r;
    }
    for (h = 0; h < 2; h++) {
        uint64_t n = ref_le(page, hist_off[h], 8);
        uint64_t prev_upper = 0;
        unsigned i;

        if (n > 64) {
            r.rc = NVME_EBS_ERR_NUM_BINS;
            r.error_histogram = h;
            return r;
        }
        for (i = 0; i < n; i++) {
            size_t at = hist_off[h] + 8 + (size_t)i * REF_BIN;
            uint64_t lower = ref_le(page, at, 8), upper = ref_le(page, at + 8, 8);
            int last = i + 1 == n;
            int open = last && (upper == 0 || upper == UINT64_MAX);

            /* Within one bin the range check comes first, then the order against the previous bin. */
            if (!(lower < upper) && !open) {
                r.rc = NVME_EBS_ERR_BIN_RANGE;
                r.error_histogram = h;
                r.error_bin = (int)i;
                return r;
            }
            if (i > 0 && lower < prev_upper) {
                r.rc = NVME_EBS_ERR_BIN_ORDER;
                r.error_histogram = h;
                r.error_bin = (int)i;
                return r;
            }
            prev_upper = upper;
        }
    }
    return r;
}

static inline void check_histogram(const uint8_t *page, size_t off, const struct nvme_ebs_histogram *hist)
{
    uint64_t i;

    /* The Python layer unpacks num_bins entries of 64-entry arrays. */
    REQUIRE(hist->num_bins <= NVME_EBS_MAX_BINS);
    REQUIRE(hist->num_bins == ref_le(page, off, 8));
    for (i = 0; i < hist->num_bins; i++) {
        size_t at = off + 8 + (size_t)i * REF_BIN;
        int last = i + 1 == hist->num_bins;

        REQUIRE(hist->lower_us[i] == ref_le(page, at, 8));
        REQUIRE(hist->upper_us[i] == ref_le(page, at + 8, 8));
        REQUIRE(hist->count[i] == (uint32_t)ref_le(page, at + 16, 4));
        /* The order the checks promise: each bin a non-empty range, except that the last one
         * may be open-ended (upper 0 or all ones), and no bin starting before its predecessor
         * ends. */
        if (!last || !(hist->upper_us[i] == 0 || hist->upper_us[i] == UINT64_MAX))
            REQUIRE(hist->lower_us[i] < hist->upper_us[i]);
        if (i > 0) {
            REQUIRE(hist->lower_us[i] >= hist->upper_us[i - 1]);
            REQUIRE(hist->lower_us[i] > hist->lower_us[i - 1]);
        }
    }
}

/* Compares one decode of `page` (len bytes) that returned rc into out against the model. */
static inline void check_stats(const uint8_t *page, size_t len, int rc, const struct nvme_ebs_stats *out)
{
    struct ref_result want = ref_decode_stats(page, len);
    const struct nvme_ebs_histogram *hist;

    /* Every code is a documented one, and the one the model expects. */
    REQUIRE(rc == NVME_EBS_OK || rc == NVME_EBS_ERR_SHORT || rc == NVME_EBS_ERR_MAGIC ||
            rc == NVME_EBS_ERR_NUM_BINS || rc == NVME_EBS_ERR_BIN_RANGE || rc == NVME_EBS_ERR_BIN_ORDER);
    REQUIRE(rc == want.rc);
    REQUIRE(out->error_histogram == want.error_histogram);
    REQUIRE(out->error_bin == want.error_bin);

    switch (rc) {
    case NVME_EBS_OK:
        REQUIRE(out->magic == (uint32_t)ref_le(page, 0, 4));
        REQUIRE(out->version == (uint32_t)ref_le(page, 4, 4));
        REQUIRE(out->kind == (out->magic == 0x3C23B510u ? NVME_EBS_KIND_EBS : NVME_EBS_KIND_INSTANCE_STORE));
        REQUIRE(out->total_read_ops == ref_le(page, REF_COUNTERS + 0, 8));
        REQUIRE(out->total_write_ops == ref_le(page, REF_COUNTERS + 8, 8));
        REQUIRE(out->total_read_bytes == ref_le(page, REF_COUNTERS + 16, 8));
        REQUIRE(out->total_write_bytes == ref_le(page, REF_COUNTERS + 24, 8));
        REQUIRE(out->total_read_time_us == ref_le(page, REF_COUNTERS + 32, 8));
        REQUIRE(out->total_write_time_us == ref_le(page, REF_COUNTERS + 40, 8));
        REQUIRE(out->ebs_volume_performance_exceeded_iops_us == ref_le(page, REF_COUNTERS + 48, 8));
        REQUIRE(out->ebs_volume_performance_exceeded_tp_us == ref_le(page, REF_COUNTERS + 56, 8));
        REQUIRE(out->ec2_instance_ebs_performance_exceeded_iops_us == ref_le(page, REF_COUNTERS + 64, 8));
        REQUIRE(out->ec2_instance_ebs_performance_exceeded_tp_us == ref_le(page, REF_COUNTERS + 72, 8));
        REQUIRE(out->volume_queue_length == ref_le(page, REF_COUNTERS + 80, 8));
        check_histogram(page, REF_HIST_READ, &out->read_hist);
        check_histogram(page, REF_HIST_WRITE, &out->write_hist);
        break;
    case NVME_EBS_ERR_SHORT:
        break;
    case NVME_EBS_ERR_MAGIC:
        /* Python quotes the magic it saw. */
        REQUIRE(out->magic == (uint32_t)ref_le(page, 0, 4));
        break;
    default:
        /* A histogram error: Python indexes the failing histogram with error_bin (and
         * error_bin - 1 for an order error) and quotes the values found there. */
        hist = out->error_histogram == 0 ? &out->read_hist : &out->write_hist;
        REQUIRE(hist->num_bins == ref_le(page, out->error_histogram == 0 ? REF_HIST_READ : REF_HIST_WRITE, 8));
        if (rc == NVME_EBS_ERR_NUM_BINS) {
            REQUIRE(hist->num_bins > NVME_EBS_MAX_BINS);
            break;
        }
        REQUIRE(out->error_bin >= 0 && (uint64_t)out->error_bin < hist->num_bins);
        if (rc == NVME_EBS_ERR_BIN_RANGE) {
            REQUIRE(hist->lower_us[out->error_bin] >= hist->upper_us[out->error_bin]);
        } else {
            REQUIRE(out->error_bin >= 1);
            REQUIRE(hist->lower_us[out->error_bin] < hist->upper_us[out->error_bin - 1]);
        }
        break;
    }
}

/* One identity field: trailing spaces and NULs trimmed, the rest copied byte for byte, then a
 * terminating NUL inside the array. */
static inline void check_field(const char *got, size_t array_size, const uint8_t *page, size_t off, size_t width)
{
    size_t n = width;

    REQUIRE(array_size == width + 1);
    while (n > 0 && (page[off + n - 1] == ' ' || page[off + n - 1] == 0))
        n--;
    REQUIRE(memcmp(got, page + off, n) == 0);
    REQUIRE(got[n] == '\0');
}

static inline void check_identity(const uint8_t *page, size_t len, int rc, const struct nvme_ebs_identity *out)
{
    REQUIRE(rc == NVME_EBS_OK || rc == NVME_EBS_ERR_SHORT);
    if (len < REF_PAGE) {
        REQUIRE(rc == NVME_EBS_ERR_SHORT);
        return;
    }
    REQUIRE(rc == NVME_EBS_OK);
    REQUIRE(out->vid == (uint16_t)ref_le(page, 0, 2));
    REQUIRE(out->ssvid == (uint16_t)ref_le(page, 2, 2));
    check_field(out->serial, sizeof(out->serial), page, 4, 20);
    check_field(out->model, sizeof(out->model), page, 24, 40);
    check_field(out->firmware, sizeof(out->firmware), page, 64, 8);
    check_field(out->bdev_mapping, sizeof(out->bdev_mapping), page, 3072, 32);
}

/*
 * The read fence around a decode: a buffer shorter than a page is poisoned whole (the
 * decoder must answer SHORT without reading a byte of it); of a longer one, everything past
 * the first page is poisoned (it must read one page, whatever len says). ASan reports any
 * read of a poisoned byte as use-after-poison.
 */
static inline void fence_reads(const uint8_t *buf, size_t len)
{
    if (len < REF_PAGE)
        ASAN_POISON_MEMORY_REGION(buf, len);
    else if (len > REF_PAGE)
        ASAN_POISON_MEMORY_REGION(buf + REF_PAGE, len - REF_PAGE);
}

static inline void unfence_reads(const uint8_t *buf, size_t len)
{
    ASAN_UNPOISON_MEMORY_REGION(buf, len);
}

#endif
