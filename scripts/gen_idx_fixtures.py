#!/usr/bin/python3
"""Write the IDX fixtures of tests/test_data.c into tests/data/idx/ (deterministic; rerun after changes).

Good files hold pixel values given by a formula the tests repeat:
  small images  [5,4,3]:  pixel(i, y, x) = 12 i + 3 y + x           labels 0 1 2 3 4
  fmnist train  [5,28,28]: pixel(i, y, x) = (31 i + 7 y + 3 x) % 256  labels 9 0 3 7 1  (gzip)
  fmnist t10k   [3,28,28]: the same formula                          labels 2 5 8        (raw, no .gz)
bad_* files carry one defect each. Standard library only. Run: /usr/bin/python3 scripts/gen_idx_fixtures.py
"""
import gzip
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests', 'data', 'idx')


def idx(dims, data, type_code=0x08):
    """An IDX image: magic 0 0 type rank, big-endian uint32 sizes, then the bytes."""
    return struct.pack('>BBBB', 0, 0, type_code, len(dims)) + b''.join(struct.pack('>I', d) for d in dims) + bytes(data)


def gz(data):
    return gzip.compress(data, compresslevel=9, mtime=0)


def write(rel, data):
    path = os.path.join(OUT, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(data)


def small_pixels(n):
    return [12 * i + 3 * y + x for i in range(n) for y in range(4) for x in range(3)]


def fm_pixels(n, h=28, w=28):
    return [(31 * i + 7 * y + 3 * x) % 256 for i in range(n) for y in range(h) for x in range(w)]


def main():
    # ---- good files ----
    small_im = idx([5, 4, 3], small_pixels(5))
    small_lb = idx([5], [0, 1, 2, 3, 4])
    write('small-images-idx3-ubyte', small_im)
    write('small-images-idx3-ubyte.gz', gz(small_im))
    write('small-labels-idx1-ubyte', small_lb)
    write('small-labels-idx1-ubyte.gz', gz(small_lb))
    write('rank4-idx4-ubyte.gz', gz(idx([2, 1, 2, 2], range(8))))

    # Fashion-MNIST layout: gzip for train, raw files for t10k (the loader's fallback)
    write('fmnist/train-images-idx3-ubyte.gz', gz(idx([5, 28, 28], fm_pixels(5))))
    write('fmnist/train-labels-idx1-ubyte.gz', gz(idx([5], [9, 0, 3, 7, 1])))
    write('fmnist/t10k-images-idx3-ubyte', idx([3, 28, 28], fm_pixels(3)))
    write('fmnist/t10k-labels-idx1-ubyte', idx([3], [2, 5, 8]))
    # images of the wrong size for Fashion-MNIST
    write('fmnist_27x28/train-images-idx3-ubyte.gz', gz(idx([5, 27, 28], fm_pixels(5, 27, 28))))
    write('fmnist_27x28/train-labels-idx1-ubyte.gz', gz(idx([5], [9, 0, 3, 7, 1])))
    # truncated pixel data (header says 5 images of 28x28, 1234 bytes follow) next to good labels
    write('fmnist_trunc/train-images-idx3-ubyte.gz', gz(idx([5, 28, 28], [])[:16] + bytes(fm_pixels(5)[:1234])))
    write('fmnist_trunc/train-labels-idx1-ubyte.gz', gz(idx([5], [9, 0, 3, 7, 1])))

    # ---- bad files, one defect each ----
    write('bad_magic_labels-as-images.gz', gz(idx([5], [0, 1, 2, 3, 4])))        # 0x00000801 where 0x803 is due
    write('bad_magic_nonzero.gz', gz(b'\x12\x34' + small_im[2:]))               # 0x12340803
    write('bad_type_float.gz', gz(idx([5, 4, 3], b'\0' * 240, type_code=0x0D)))  # 0x00000d03
    write('bad_empty', b'')
    write('bad_trunc_magic.gz', gz(small_im[:3]))
    write('bad_trunc_header.gz', gz(small_im[:10]))                             # magic + 1.5 sizes
    write('bad_trunc_data.gz', gz(small_im[:16 + 50]))                          # 50 of 60 pixels
    write('bad_trunc_data_raw', small_im[:16 + 50])
    write('bad_extra_data.gz', gz(small_im + b'\0'))
    write('bad_labels_4.gz', gz(idx([4], [0, 1, 2, 3])))                        # 4 labels for 5 images
    write('bad_labels_range.gz', gz(idx([5], [0, 1, 10, 2, 3])))                # label 10 at index 2
    write('bad_garbage.gz', b'This is not gzip and not IDX either, just text.\n' * 3)
    good = gz(small_im)
    # a valid gzip header followed by damaged deflate data
    write('bad_gzip_corrupt.gz', good[:10] + bytes(b ^ 0xA5 for b in good[10:30]) + good[30:])
    write('bad_gzip_cut.gz', good[:len(good) // 2])                             # stream stops mid-way
    write('bad_gzip_no_trailer.gz', good[:-8])                                  # data complete, CRC missing
    crc = bytearray(good)
    crc[-8] ^= 0xFF                                                             # wrong CRC-32
    write('bad_gzip_crc.gz', bytes(crc))
    write('bad_huge_dims.gz', gz(idx([0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF], [])))
    write('bad_claims_big.gz', gz(idx([1000000, 28, 28], [1, 2, 3])))           # 784 MB claimed, 3 bytes held


if __name__ == '__main__':
    main()
