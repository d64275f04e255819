//! pgbench's random distributions and hash functions, with the same parameter rules.

use rand::Rng;

const MIN_GAUSSIAN_PARAM: f64 = 2.0;
const MIN_ZIPFIAN_PARAM: f64 = 1.001;
const MAX_ZIPFIAN_PARAM: f64 = 1000.0;

fn check_range(lb: i64, ub: i64) -> Result<u64, String> {
    if lb > ub {
        return Err(format!("empty range given to random: {lb} > {ub}"));
    }
    // The number of values minus one; it must fit an i64 like pgbench requires.
    let span = ub.wrapping_sub(lb) as u64;
    if span >= i64::MAX as u64 {
        return Err("random range is too large".into());
    }
    Ok(span)
}

/// A uniform integer in `[lb, ub]`.
pub fn uniform<R: Rng>(rng: &mut R, lb: i64, ub: i64) -> Result<i64, String> {
    let span = check_range(lb, ub)?;
    Ok(lb.wrapping_add(rng.gen_range(0..=span) as i64))
}

/// Maps a double in `[0, 1)` onto `[lb, ub]`.
fn scale(lb: i64, ub: i64, r: f64) -> i64 {
    let n = (ub - lb + 1) as f64;
    (lb + (n * r) as i64).min(ub)
}

/// A truncated normal distribution centred on the middle of the range; `parameter` is how many
/// standard deviations fit in each half of the range (pgbench's random_gaussian).
pub fn gaussian<R: Rng>(rng: &mut R, lb: i64, ub: i64, parameter: f64) -> Result<i64, String> {
    check_range(lb, ub)?;
    if parameter < MIN_GAUSSIAN_PARAM {
        return Err(format!("gaussian parameter must be at least {MIN_GAUSSIAN_PARAM} (not {parameter})"));
    }
    let stdev = loop {
        // Box-Muller; u1 in (0, 1] so ln() is finite.
        let u1: f64 = 1.0 - rng.gen::<f64>();
        let u2: f64 = rng.gen::<f64>();
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        if (-parameter..parameter).contains(&z) {
            break z;
        }
    };
    Ok(scale(lb, ub, (stdev + parameter) / (parameter * 2.0)))
}

/// A truncated exponential distribution: the first values are the most frequent.
pub fn exponential<R: Rng>(rng: &mut R, lb: i64, ub: i64, parameter: f64) -> Result<i64, String> {
    check_range(lb, ub)?;
    if parameter <= 0.0 {
        return Err(format!("exponential parameter must be greater than zero (not {parameter})"));
    }
    let cut = (-parameter).exp();
    let uniform: f64 = 1.0 - rng.gen::<f64>();
    let r = -(cut + (1.0 - cut) * uniform).ln() / parameter;
    Ok(scale(lb, ub, r))
}

/// A Zipfian distribution (pgbench's rejection method, s in [1.001, 1000]).
pub fn zipfian<R: Rng>(rng: &mut R, lb: i64, ub: i64, s: f64) -> Result<i64, String> {
    let span = check_range(lb, ub)?;
    if !(MIN_ZIPFIAN_PARAM..=MAX_ZIPFIAN_PARAM).contains(&s) {
        return Err(format!(
            "zipfian parameter must be in [{MIN_ZIPFIAN_PARAM}, {MAX_ZIPFIAN_PARAM}] (not {s})"
        ));
    }
    let n = span as f64 + 1.0;
    if n <= 1.0 {
        return Ok(lb);
    }
    let b = 2f64.powf(s - 1.0);
    let x = loop {
        let u: f64 = 1.0 - rng.gen::<f64>();
        let v: f64 = rng.gen::<f64>();
        let x = u.powf(-1.0 / (s - 1.0)).floor();
        let t = (1.0 + 1.0 / x).powf(s - 1.0);
        if v * x * (t - 1.0) / (b - 1.0) <= t / b && x <= n {
            break x;
        }
    };
    Ok(lb + x as i64 - 1)
}

const FNV_PRIME: u64 = 0x100000001b3;
const FNV_OFFSET_BASIS: u64 = 0xcbf29ce484222325;
const MM2_MUL: u64 = 0xc6a4a7935bd1e995;
const MM2_MUL_TIMES_8: u64 = 0x35253c9ade8f4ca8;
const MM2_ROT: u32 = 47;

pub fn hash_fnv1a(value: i64, seed: u64) -> i64 {
    let mut result = FNV_OFFSET_BASIS ^ seed;
    let mut v = value;
    for _ in 0..8 {
        let octet = (v & 0xff) as u64;
        v >>= 8;
        result ^= octet;
        result = result.wrapping_mul(FNV_PRIME);
    }
    result as i64
}

pub fn hash_murmur2(value: i64, seed: u64) -> i64 {
    let mut result = seed ^ MM2_MUL_TIMES_8;
    let mut k = value as u64;
    k = k.wrapping_mul(MM2_MUL);
    k ^= k >> MM2_ROT;
    k = k.wrapping_mul(MM2_MUL);
    result ^= k;
    result = result.wrapping_mul(MM2_MUL);
    result ^= result >> MM2_ROT;
    result = result.wrapping_mul(MM2_MUL);
    result ^= result >> MM2_ROT;
    result as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn skewed_distributions_favour_their_end() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        let (mut low_exp, mut low_zipf, mut mid_gauss) = (0, 0, 0);
        for _ in 0..10_000 {
            low_exp += (exponential(&mut rng, 1, 100, 5.0).unwrap() <= 20) as u32;
            low_zipf += (zipfian(&mut rng, 1, 100, 1.5).unwrap() <= 10) as u32;
            mid_gauss += (26..=75).contains(&gaussian(&mut rng, 1, 100, 3.0).unwrap()) as u32;
        }
        assert!(low_exp > 6_000, "exponential: {low_exp}");
        assert!(low_zipf > 5_000, "zipfian: {low_zipf}");
        assert!(mid_gauss > 8_000, "gaussian: {mid_gauss}");
    }

    #[test]
    fn uniform_covers_the_range_and_rejects_empty_ones() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(2);
        let mut seen = [false; 5];
        for _ in 0..1000 {
            seen[(uniform(&mut rng, 10, 14).unwrap() - 10) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
        assert!(uniform(&mut rng, 2, 1).is_err());
        assert!(uniform(&mut rng, i64::MIN, i64::MAX).is_err());
        assert!(gaussian(&mut rng, 1, 10, 1.0).is_err());
        assert!(exponential(&mut rng, 1, 10, 0.0).is_err());
        assert!(zipfian(&mut rng, 1, 10, 1.0).is_err());
    }

    #[test]
    fn hashes_match_pgbench() {
        // From pgbench 15: \set h debug(hash_murmur2(1, 0)) and so on.
        assert_eq!(hash_murmur2(1, 0), -8089716718896805586);
        assert_eq!(hash_fnv1a(1, 0), -8517097267634966620);
        assert_eq!(hash_murmur2(-12345, 77), -836592633463425581);
        assert_eq!(hash_fnv1a(987654321, 5), -8770616246048517739);
    }
}
