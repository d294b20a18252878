/*
 * libFuzzer target: nvme_ebs_decode_identity on the raw input, taken as an Identify
 * Controller answer of any length.
 *
 * The same read fence as the statistics target (reference.h): shorter than a page, no byte
 * may be read; longer, nothing past the first page. Each string field must come out
 * NUL-terminated inside its array with exactly the page's bytes less the trailing padding;
 * the output struct is allocated to its exact size so a write past its end is reported.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "reference.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *page = malloc(size);
    struct nvme_ebs_identity *out = malloc(sizeof(*out)), *again = malloc(sizeof(*again));
    int rc, rc_again;

    REQUIRE((page != NULL || size == 0) && out != NULL && again != NULL);
    if (size > 0)
        memcpy(page, data, size);
    memset(out, FILL_BYTE, sizeof(*out));
    memset(again, FILL_BYTE, sizeof(*again));

    fence_reads(page, size);
    rc = nvme_ebs_decode_identity(page, size, out);
    rc_again = nvme_ebs_decode_identity(page, size, again);
    unfence_reads(page, size);

    check_identity(page, size, rc, out);
    REQUIRE(rc_again == rc);
    REQUIRE(memcmp(out, again, sizeof(*out)) == 0);
    REQUIRE(size == 0 || memcmp(page, data, size) == 0);
    free(again);
    free(out);
    free(page);
    return 0;
}
