// CImageCodecs: small C glue around libpng, libjpeg(-turbo) and libwebp.
//
// Both libraries report fatal errors through callbacks that must not return
// (libjpeg's default handler even calls exit()). Recovering requires
// setjmp/longjmp, which Swift cannot express, so the decoding loops live here.
// Every function returns 0 on success, or a non-zero status with a
// NUL-terminated human-readable message in `error`; they never abort the process.
#ifndef CIMAGECODECS_H
#define CIMAGECODECS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    CIC_OK = 0,
    CIC_CORRUPT = 1,      // library error: truncated / malformed stream
    CIC_UNSUPPORTED = 2,  // well-formed but a mode we refuse (e.g. a 2-component JPEG)
    CIC_TOO_LARGE = 3,    // dimensions over the safety limit
    CIC_NO_MEMORY = 4,
} cic_status;

typedef struct {
    unsigned char *pixels;  // malloc'd, interleaved 8-bit, row-major; free with cic_image_free
    int width;
    int height;
    int channels;           // 3 (RGB) or 4 (RGBA: non-premultiplied alpha kept as decoded)
    char error[256];        // message when status != CIC_OK
} cic_image;

/// Decodes a PNG held in memory. Grey, grey+alpha, palette and tRNS are
/// expanded; 16-bit samples are reduced to 8 bits with png_set_strip_16
/// (high byte kept). The result is RGB (channels 3) or RGBA (channels 4, when
/// the file has an alpha channel or a tRNS chunk).
int cic_decode_png(const unsigned char *data, size_t size, cic_image *out);

/// Decodes a baseline/progressive JPEG held in memory to RGB (grey is
/// replicated; CMYK and YCCK converted as Pillow converts them). A premature
/// end of data (libjpeg warning JWRN_JPEG_EOF) is treated as an error.
int cic_decode_jpeg(const unsigned char *data, size_t size, cic_image *out);

/// Decodes a still WebP (lossy or lossless) held in memory with libwebp's
/// default (fancy) upsampling, as Pillow does: RGB, or RGBA (non-premultiplied)
/// when the file has alpha. An animated WebP is refused (CIC_UNSUPPORTED).
int cic_decode_webp(const unsigned char *data, size_t size, cic_image *out);

void cic_image_free(cic_image *image);

#ifdef __cplusplus
}
#endif

#endif
