// Rng: the simulator's only source of randomness.
//
// xoshiro256** seeded through SplitMix64. One Rng per seed drives everything: the schedule, the
// faults, the workload and the gids the protocol draws through Env::Random64. Nothing else in the
// simulator may be random (no std::random_device, no addresses, no unordered containers whose
// order could leak into decisions), which is what makes a seed replay bit for bit.
//
// Thread-safety: none needed; a simulation runs on one OS thread.
#ifndef SEIGO_SIM_RNG_H_
#define SEIGO_SIM_RNG_H_

#include <cmath>
#include <cstdint>

namespace seigo::sim {

class Rng {
 public:
  explicit Rng(uint64_t seed) {
    uint64_t x = seed;
    for (uint64_t& w : s_) w = SplitMix64(&x);
  }

  uint64_t Next() {
    ++draws_;
    const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = Rotl(s_[3], 45);
    return result;
  }

  // Uniform in [0, n); 0 when n is 0.
  uint64_t Uniform(uint64_t n) { return n == 0 ? 0 : Next() % n; }
  // Uniform in [lo, hi] (inclusive).
  int64_t Range(int64_t lo, int64_t hi) {
    return lo + static_cast<int64_t>(Uniform(static_cast<uint64_t>(hi - lo) + 1));
  }
  double Unit() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }
  bool Chance(double p) { return Unit() < p; }
  // Log-uniform in [lo, hi]: as likely to be in [1, 10] as in [10, 100].
  double LogUniform(double lo, double hi) { return lo * std::exp(std::log(hi / lo) * Unit()); }
  int64_t LogRange(int64_t lo, int64_t hi) {
    return static_cast<int64_t>(LogUniform(static_cast<double>(lo), static_cast<double>(hi)));
  }

  uint64_t draws() const { return draws_; }
  // Summarises the whole stream so far: two runs of a seed that drew different numbers, or a
  // different count of them, end with different fingerprints.
  uint64_t Fingerprint() const {
    return s_[0] ^ Rotl(s_[1], 13) ^ Rotl(s_[2], 29) ^ s_[3] ^ draws_;
  }

 private:
  static uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  static uint64_t SplitMix64(uint64_t* x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

  uint64_t s_[4];
  uint64_t draws_ = 0;
};

}  // namespace seigo::sim

#endif  // SEIGO_SIM_RNG_H_
