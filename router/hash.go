package router

import "encoding/binary"

// partitionSeed is HASH_PARTITION_SEED from Postgres's partbounds.c: every
// hash partitioning support function is called with this seed.
const partitionSeed uint64 = 0x7A5B22367996DCFD

// HashInt returns the 64-bit hash Postgres computes for an integer partition
// key (hashint8extended, which agrees with hashint2/4extended for values that
// fit in those types) before combining.
func HashInt(v int64) uint64 {
	lo := uint32(v)
	hi := uint32(uint64(v) >> 32)
	if v >= 0 {
		lo ^= hi
	} else {
		lo ^= ^hi
	}
	return hashUint32Extended(lo, partitionSeed)
}

// HashText returns hashtextextended for a text key under a deterministic
// collation: the lookup3 hash of the string's bytes.
func HashText(s string) uint64 {
	return hashBytesExtended([]byte(s), partitionSeed)
}

// PartitionOf maps a key hash to a partition index exactly as
// satisfies_hash_partition(parent, modulus, remainder, key) does for a
// single-column key: hash_combine64(0, h) mod modulus.
func PartitionOf(h uint64, modulus int) int {
	return int(combine64(0, h) % uint64(modulus))
}

func combine64(a, b uint64) uint64 {
	a ^= b + 0x49a0f4dd15e5a8e3 + (a << 54) + (a >> 7) // hash_combine64, common/hashfn.h
	return a
}

func rotl(x uint32, k uint) uint32 { return x<<k | x>>(32-k) }

func mix(a, b, c uint32) (uint32, uint32, uint32) {
	a -= c
	a ^= rotl(c, 4)
	c += b
	b -= a
	b ^= rotl(a, 6)
	a += c
	c -= b
	c ^= rotl(b, 8)
	b += a
	a -= c
	a ^= rotl(c, 16)
	c += b
	b -= a
	b ^= rotl(a, 19)
	a += c
	c -= b
	c ^= rotl(b, 4)
	b += a
	return a, b, c
}

func final(a, b, c uint32) (uint32, uint32, uint32) {
	c ^= b
	c -= rotl(b, 14)
	a ^= c
	a -= rotl(c, 11)
	b ^= a
	b -= rotl(a, 25)
	c ^= b
	c -= rotl(b, 16)
	a ^= c
	a -= rotl(c, 4)
	b ^= a
	b -= rotl(a, 14)
	c ^= b
	c -= rotl(b, 24)
	return a, b, c
}

// seeded returns lookup3's initial state for a key of n bytes, perturbed by
// a non-zero seed as Postgres's *_extended variants do.
func seeded(n int, seed uint64) (uint32, uint32, uint32) {
	a := 0x9e3779b9 + uint32(n) + 3923095
	b, c := a, a
	if seed != 0 {
		a += uint32(seed >> 32)
		b += uint32(seed)
		a, b, c = mix(a, b, c)
	}
	return a, b, c
}

func hashUint32Extended(k uint32, seed uint64) uint64 {
	a, b, c := seeded(4, seed)
	a += k
	a, b, c = final(a, b, c)
	return uint64(b)<<32 | uint64(c)
}

// hashBytesExtended is lookup3 over k as Postgres runs it on a little-endian
// machine (the word order matters for the result).
func hashBytesExtended(k []byte, seed uint64) uint64 {
	a, b, c := seeded(len(k), seed)
	for len(k) >= 12 {
		a += binary.LittleEndian.Uint32(k[0:])
		b += binary.LittleEndian.Uint32(k[4:])
		c += binary.LittleEndian.Uint32(k[8:])
		a, b, c = mix(a, b, c)
		k = k[12:]
	}
	// The last 0..11 bytes: a takes bytes 0-3, b 4-7, c 8-10 shifted up one
	// byte (c's lowest byte is reserved for the length in lookup3).
	var tail [12]byte
	copy(tail[:], k)
	switch n := len(k); {
	case n > 8:
		c += binary.LittleEndian.Uint32(tail[8:]) << 8
		fallthrough
	case n > 4:
		b += binary.LittleEndian.Uint32(tail[4:])
		fallthrough
	case n > 0:
		a += binary.LittleEndian.Uint32(tail[0:])
	}
	a, b, c = final(a, b, c)
	return uint64(b)<<32 | uint64(c)
}
