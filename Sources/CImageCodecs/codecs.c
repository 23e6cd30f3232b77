// CImageCodecs: libpng / libjpeg / libwebp decoding with recoverable errors.
#include "CImageCodecs.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <png.h>
#include <jpeglib.h>
#include <jerror.h>
#include <webp/decode.h>

// Refuse absurd headers before allocating. A header's size costs nothing to claim (a 1 MB PNG of
// zeros can say 16384 x 16384, and decoding it peaked at 2.1 GB: the decoded pixels, then the
// colour and alpha planes), so the limit is PIL's decompression-bomb bound, Image.MAX_IMAGE_PIXELS
// (89,478,485 pixels, a little over 85 MP: every camera's photo fits), at most ~700 MB decoded.
#define CIC_MAX_PIXELS ((size_t)89478485)

static void cic_set_error(cic_image *out, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vsnprintf(out->error, sizeof(out->error), fmt, args);
    va_end(args);
}

static int cic_check_size(cic_image *out, size_t width, size_t height) {
    if (width == 0 || height == 0) {
        cic_set_error(out, "image has zero size (%zux%zu)", width, height);
        return CIC_CORRUPT;
    }
    // No bound a side (Pillow has none): a 70000 x 1 strip decodes; preprocessing bounds its resize.
    if (width * height > CIC_MAX_PIXELS) {
        cic_set_error(out, "image dimensions %zux%zu (%zu pixels) exceed the limit of %zu pixels", width, height,
                      width * height, CIC_MAX_PIXELS);
        return CIC_TOO_LARGE;
    }
    return CIC_OK;
}

void cic_image_free(cic_image *image) {
    if (image && image->pixels) {
        free(image->pixels);
        image->pixels = NULL;
    }
}

// MARK: - PNG

typedef struct {
    const unsigned char *data;
    size_t size;
    size_t offset;
    cic_image *out;
} cic_png_source;

static void cic_png_error(png_structp png, png_const_charp message) {
    cic_png_source *src = (cic_png_source *)png_get_error_ptr(png);
    // Keep the first message: a read past the end is the root cause.
    if (src->out->error[0] == 0) cic_set_error(src->out, "%s", message);
    png_longjmp(png, 1);
}

static void cic_png_warning(png_structp png, png_const_charp message) {
    (void)png;
    (void)message;  // benign (e.g. unknown ancillary chunks); PIL ignores these too
}

static void cic_png_read(png_structp png, png_bytep dest, png_size_t length) {
    cic_png_source *src = (cic_png_source *)png_get_io_ptr(png);
    if (length > src->size - src->offset) {
        cic_set_error(src->out, "truncated PNG data (needed %zu more bytes at offset %zu of %zu)",
                      (size_t)length, src->offset, src->size);
        png_longjmp(png, 1);
    }
    memcpy(dest, src->data + src->offset, length);
    src->offset += length;
}

int cic_decode_png(const unsigned char *data, size_t size, cic_image *out) {
    memset(out, 0, sizeof(*out));
    if (size < 8 || png_sig_cmp((png_const_bytep)data, 0, 8) != 0) {
        cic_set_error(out, "missing PNG signature");
        return CIC_CORRUPT;
    }
    cic_png_source src = {data, size, 0, out};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, cic_png_error, cic_png_warning);
    if (!png) {
        cic_set_error(out, "png_create_read_struct failed");
        return CIC_NO_MEMORY;
    }
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        cic_set_error(out, "png_create_info_struct failed");
        return CIC_NO_MEMORY;
    }
    // Modified after setjmp, read after longjmp: must be volatile.
    unsigned char *volatile pixels = NULL;
    png_bytep *volatile rows = NULL;
    volatile int status = CIC_CORRUPT;

    if (setjmp(png_jmpbuf(png))) {
        free(rows);
        free(pixels);
        png_destroy_read_struct(&png, &info, NULL);
        if (out->error[0] == 0) cic_set_error(out, "corrupt PNG");
        out->pixels = NULL;
        return status;
    }

    png_set_read_fn(png, &src, cic_png_read);
    png_set_user_limits(png, PNG_UINT_31_MAX, PNG_UINT_31_MAX);  // cic_check_size bounds the pixels instead
    png_read_info(png, info);

    png_uint_32 width = 0, height = 0;
    int bit_depth = 0, color_type = 0, interlace = 0;
    png_get_IHDR(png, info, &width, &height, &bit_depth, &color_type, &interlace, NULL, NULL);
    int sizeCheck = cic_check_size(out, width, height);
    if (sizeCheck != CIC_OK) {
        status = sizeCheck;
        png_longjmp(png, 1);
    }

    if (bit_depth == 16) png_set_strip_16(png);
    if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
    if (color_type == PNG_COLOR_TYPE_GRAY || color_type == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    if (bit_depth < 8 && color_type != PNG_COLOR_TYPE_GRAY) png_set_packing(png);
    if (interlace != PNG_INTERLACE_NONE) png_set_interlace_handling(png);
    png_read_update_info(png, info);

    int channels = png_get_channels(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    if ((channels != 3 && channels != 4) || png_get_bit_depth(png, info) != 8 ||
        rowbytes != (size_t)width * (size_t)channels) {
        status = CIC_UNSUPPORTED;
        cic_set_error(out, "unsupported PNG layout (color type %d, bit depth %d -> %d channels)",
                      color_type, bit_depth, channels);
        png_longjmp(png, 1);
    }

    pixels = (unsigned char *)malloc(rowbytes * height);
    rows = (png_bytep *)malloc(sizeof(png_bytep) * height);
    if (!pixels || !rows) {
        status = CIC_NO_MEMORY;
        cic_set_error(out, "out of memory decoding %ux%u PNG", (unsigned)width, (unsigned)height);
        png_longjmp(png, 1);
    }
    for (png_uint_32 y = 0; y < height; y++) rows[y] = pixels + (size_t)y * rowbytes;
    png_read_image(png, rows);
    // Not calling png_read_end: trailing chunks (and their CRCs) after IDAT are
    // irrelevant to the pixels, matching PIL which stops after the image data.

    free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    out->pixels = pixels;
    out->width = (int)width;
    out->height = (int)height;
    out->channels = channels;
    return CIC_OK;
}

// MARK: - JPEG

typedef struct {
    struct jpeg_error_mgr base;
    jmp_buf jump;
    cic_image *out;
    int finishing;  // past the last row, reading on to the EOI marker
} cic_jpeg_error;

static void cic_jpeg_error_exit(j_common_ptr cinfo) {
    cic_jpeg_error *err = (cic_jpeg_error *)cinfo->err;
    if (err->out->error[0] == 0) {
        char buffer[JMSG_LENGTH_MAX];
        (*cinfo->err->format_message)(cinfo, buffer);
        cic_set_error(err->out, err->finishing ? "corrupt JPEG data after the last row (%s): the rows decoded from it cannot be trusted" : "%s", buffer);
    }
    longjmp(err->jump, 1);
}

static void cic_jpeg_emit_message(j_common_ptr cinfo, int level) {
    // level -1 is a warning about corrupt data. Premature end of data is fatal
    // for us (PIL raises "image file is truncated") until the last row is read (a
    // missing EOI marker is tolerated, as PIL does); other warnings are tolerated,
    // as PIL does.
    if (level == -1 && cinfo->err->msg_code == JWRN_JPEG_EOF && !((cic_jpeg_error *)cinfo->err)->finishing) {
        cic_jpeg_error *err = (cic_jpeg_error *)cinfo->err;
        cic_set_error(err->out, "truncated JPEG data (premature end of data segment)");
        longjmp(err->jump, 1);
    }
}

static void cic_jpeg_output_message(j_common_ptr cinfo) {
    (void)cinfo;  // never print to stderr
}

// A row of libjpeg's CMYK samples as Pillow turns a CMYK JPEG into RGB: it reads the samples
// inverted ("CMYK;I", Adobe's convention, for every 4-component JPEG), then Convert.c's cmyk2rgb:
// each channel nk - c * nk / 255 (rounded as MULDIV255) with nk = 255 - k.
static void cic_cmyk_to_rgb(const unsigned char *in, unsigned char *out, size_t width) {
    for (size_t x = 0; x < width; x++) {
        int nk = in[4 * x + 3];  // 255 - k, k = 255 - the stored sample
        for (int c = 0; c < 3; c++) {
            int cyan = 255 - in[4 * x + c], t = cyan * nk + 128;
            int v = nk - (((t >> 8) + t) >> 8);
            out[3 * x + c] = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
    }
}

int cic_decode_jpeg(const unsigned char *data, size_t size, cic_image *out) {
    memset(out, 0, sizeof(*out));
    if (size < 3 || data[0] != 0xFF || data[1] != 0xD8) {
        cic_set_error(out, "missing JPEG SOI marker");
        return CIC_CORRUPT;
    }
    struct jpeg_decompress_struct cinfo;
    cic_jpeg_error err;
    memset(&cinfo, 0, sizeof(cinfo));
    cinfo.err = jpeg_std_error(&err.base);
    err.base.error_exit = cic_jpeg_error_exit;
    err.base.emit_message = cic_jpeg_emit_message;
    err.base.output_message = cic_jpeg_output_message;
    err.out = out;
    err.finishing = 0;
    unsigned char *volatile pixels = NULL;
    unsigned char *volatile cmykRow = NULL;  // a CMYK JPEG's row before it is RGB
    volatile int status = CIC_CORRUPT;

    if (setjmp(err.jump)) {
        jpeg_destroy_decompress(&cinfo);
        free(pixels);
        free(cmykRow);
        out->pixels = NULL;
        if (out->error[0] == 0) cic_set_error(out, "corrupt JPEG");
        return status;
    }

    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)size);
    jpeg_read_header(&cinfo, TRUE);

    int cmyk = 0;
    switch (cinfo.jpeg_color_space) {
    case JCS_GRAYSCALE:
    case JCS_YCbCr:
    case JCS_RGB:
        cinfo.out_color_space = JCS_RGB;  // grey is replicated into R=G=B
        break;
    case JCS_CMYK:
    case JCS_YCCK:
        cinfo.out_color_space = JCS_CMYK;  // libjpeg turns YCCK into CMYK; to RGB below, as Pillow does
        cmyk = 1;
        break;
    default:
        status = CIC_UNSUPPORTED;
        cic_set_error(out, "unsupported JPEG colour space (%d components; greyscale, YCbCr, RGB, CMYK and YCCK are supported: convert the image to RGB)",
                      cinfo.num_components);
        longjmp(err.jump, 1);
    }
    // Library defaults (JDCT_ISLOW, fancy upsampling) are what Pillow uses.
    int sizeCheck = cic_check_size(out, cinfo.image_width, cinfo.image_height);
    if (sizeCheck != CIC_OK) {
        status = sizeCheck;
        longjmp(err.jump, 1);
    }

    jpeg_start_decompress(&cinfo);
    if (cinfo.output_components != (cmyk ? 4 : 3)) {
        status = CIC_UNSUPPORTED;
        cic_set_error(out, "unexpected JPEG output with %d components", cinfo.output_components);
        longjmp(err.jump, 1);
    }
    size_t width = cinfo.output_width, height = cinfo.output_height;
    size_t rowbytes = width * 3;
    pixels = (unsigned char *)malloc(rowbytes * height);
    if (!pixels) {
        status = CIC_NO_MEMORY;
        cic_set_error(out, "out of memory decoding %zux%zu JPEG", width, height);
        longjmp(err.jump, 1);
    }
    if (cmyk) {
        // One CMYK row at a time (the pixels' row holds 3/4 of it): into RGB in place.
        cmykRow = (unsigned char *)malloc(width * 4);
        if (!cmykRow) {
            status = CIC_NO_MEMORY;
            cic_set_error(out, "out of memory decoding %zux%zu JPEG", width, height);
            longjmp(err.jump, 1);
        }
        while (cinfo.output_scanline < cinfo.output_height) {
            unsigned char *rgb = pixels + (size_t)cinfo.output_scanline * rowbytes;
            JSAMPROW row = cmykRow;
            if (jpeg_read_scanlines(&cinfo, &row, 1) != 1) break;
            cic_cmyk_to_rgb(cmykRow, rgb, width);
        }
        free(cmykRow);
        cmykRow = NULL;
    } else {
        while (cinfo.output_scanline < cinfo.output_height) {
            JSAMPROW row = pixels + (size_t)cinfo.output_scanline * rowbytes;
            jpeg_read_scanlines(&cinfo, &row, 1);
        }
    }
    // Read on to the EOI marker as Pillow does: corrupt scan data can leave libjpeg
    // filling the last rows after a warning and fail only here ("broken data stream"
    // in Pillow). A missing EOI is no error; data after EOI is never read.
    err.finishing = 1;
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    out->pixels = pixels;
    out->width = (int)width;
    out->height = (int)height;
    out->channels = 3;
    return CIC_OK;
}

// MARK: - WebP

static const char *cic_webp_status(VP8StatusCode status) {
    switch (status) {
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR: return "malformed bitstream";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "a feature libwebp does not support";
    case VP8_STATUS_SUSPENDED: return "decoding suspended";
    case VP8_STATUS_USER_ABORT: return "decoding aborted";
    case VP8_STATUS_NOT_ENOUGH_DATA: return "truncated data";
    default: return "unknown error";
    }
}

int cic_decode_webp(const unsigned char *data, size_t size, cic_image *out) {
    out->pixels = NULL;
    WebPBitstreamFeatures features;
    VP8StatusCode status = WebPGetFeatures(data, size, &features);
    if (status != VP8_STATUS_OK) {
        cic_set_error(out, "cannot read the WebP header: %s", cic_webp_status(status));
        return status == VP8_STATUS_UNSUPPORTED_FEATURE ? CIC_UNSUPPORTED : CIC_CORRUPT;
    }
    // Pillow shows an animation's first frame; libwebp's still decoder refuses animations.
    if (features.has_animation) {
        cic_set_error(out, "animated WebP is not supported (save one frame as a PNG or a still WebP)");
        return CIC_UNSUPPORTED;
    }
    int rc = cic_check_size(out, (size_t)features.width, (size_t)features.height);
    if (rc != CIC_OK) return rc;
    int channels = features.has_alpha ? 4 : 3;
    size_t stride = (size_t)features.width * channels, bytes = stride * (size_t)features.height;
    out->pixels = malloc(bytes);
    if (!out->pixels) {
        cic_set_error(out, "out of memory for %dx%d pixels", features.width, features.height);
        return CIC_NO_MEMORY;
    }
    // Decoding into our buffer: the default config (fancy upsampling, no dithering), as WebPDecode.
    uint8_t *decoded = channels == 4 ? WebPDecodeRGBAInto(data, size, out->pixels, bytes, (int)stride)
                                     : WebPDecodeRGBInto(data, size, out->pixels, bytes, (int)stride);
    if (!decoded) {
        cic_image_free(out);
        cic_set_error(out, "the image data is corrupt or truncated");
        return CIC_CORRUPT;
    }
    out->width = features.width;
    out->height = features.height;
    out->channels = channels;
    return CIC_OK;
}
