//! The detectors against a corpus of positives and negatives for each: precision
//! and recall are printed (`cargo test corpus -- --nocapture`) and held to a floor.

use super::detect::{find, Detector};

/// A memory's text, and the values in it that `detector` must find (none: what it
/// must leave alone).
struct Case {
    detector: Detector,
    text: &'static str,
    values: &'static [&'static str],
}

const fn case(detector: Detector, text: &'static str, values: &'static [&'static str]) -> Case {
    Case {
        detector,
        text,
        values,
    }
}

use Detector::*;

const CORPUS: &[Case] = &[
    // Email addresses.
    case(Email, r#"{"contact":"ghost@example.com"}"#, &["ghost@example.com"]),
    case(Email, "Write to Anna.Smith@Company.org.", &["Anna.Smith@Company.org"]),
    case(Email, "cc first.last+tag@mail.example.co.uk, thanks", &["first.last+tag@mail.example.co.uk"]),
    case(Email, "two: a_b@x-y.io and c.d@e.fr", &["a_b@x-y.io", "c.d@e.fr"]),
    case(Email, "ping @ghost on the forum", &[]),
    case(Email, "user@localhost is not an address on the internet", &[]),
    case(Email, "pinned numpy==1.26@3.11 in the notes", &[]),
    case(Email, "name at example dot com", &[]),
    case(Email, "decorator @property and email@", &[]),
    // Phone numbers.
    case(Phone, "call +1 415 555 2671 tomorrow", &["+1 415 555 2671"]),
    case(Phone, r#"{"phone":"+44 20 7946 0958"}"#, &["+44 20 7946 0958"]),
    case(Phone, "office (415) 555-2671, home 415-555-2672", &["(415) 555-2671", "415-555-2672"]),
    case(Phone, "portable: 06 12 34 56 78", &["06 12 34 56 78"]),
    case(Phone, "Berlin +49 30 901820", &["+49 30 901820"]),
    case(Phone, "met on 2024-06-28 at 12:30:45", &[]),
    case(Phone, "due 28.06.2024, invoice 1234567890", &[]),
    case(Phone, "pi is 3.14159 and e is 2.71828", &[]),
    case(Phone, "release v1.2.3 of 2024", &[]),
    case(Phone, "budget 1 299 000 for 2025", &[]),
    case(Phone, "server 192.168.100.200 is up", &[]),
    // Card numbers: Luhn and a network's prefix.
    case(Card, "visa 4111 1111 1111 1111 exp 12/29", &["4111 1111 1111 1111"]),
    case(Card, r#"{"card":"5555555555554444"}"#, &["5555555555554444"]),
    case(Card, "amex 3782-822463-10005", &["3782-822463-10005"]),
    case(Card, "discover 6011111111111117 and jcb 3530111333300000", &["6011111111111117", "3530111333300000"]),
    case(Card, "mc 2223 0031 2200 3222", &["2223 0031 2200 3222"]),
    case(Card, "typo 4111 1111 1111 1112 fails Luhn", &[]),
    case(Card, "luhn-valid but no network: 7000000000000005", &[]),
    case(Card, "order 1234567890123452 shipped", &[]),
    case(Card, "isbn 9780306406157", &[]),
    case(Card, "epoch ms 1717171717171", &[]),
    // IBANs: the country's length and mod 97.
    case(Iban, "pay GB82 WEST 1234 5698 7654 32 today", &["GB82 WEST 1234 5698 7654 32"]),
    case(Iban, r#"{"iban":"DE89370400440532013000"}"#, &["DE89370400440532013000"]),
    case(Iban, "FR14 2004 1010 0505 0001 3M02 606.", &["FR14 2004 1010 0505 0001 3M02 606"]),
    case(Iban, "nl: NL91ABNA0417164300, ch: CH9300762011623852957", &["NL91ABNA0417164300", "CH9300762011623852957"]),
    case(Iban, "typo GB82 WEST 1234 5698 7654 33", &[]),
    case(Iban, "DE89370400440532013001 has a wrong check", &[]),
    case(Iban, "model XY12 3456 7890 1234 5678 90 is a part number", &[]),
    case(Iban, "flight LH2024 and room GB12", &[]),
    // Secrets: prefixes and high entropy.
    case(Secret, "token ghp_1A2b3C4d5E6f7G8h9I0jKlMnOpQrStUvWxYz", &["ghp_1A2b3C4d5E6f7G8h9I0jKlMnOpQrStUvWxYz"]),
    case(Secret, "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPL3", &["AKIAIOSFODNN7EXAMPL3"]),
    case(Secret, "key sk-ant-api03-Zx9Qw3Lp8Rt2Vn6Ym4Kb7Hc1Jd5Fg0SaQ2", &["sk-ant-api03-Zx9Qw3Lp8Rt2Vn6Ym4Kb7Hc1Jd5Fg0SaQ2"]),
    case(Secret, "slack xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", &["xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"]),
    case(Secret, "jwt eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", &["eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"]),
    case(Secret, r#"{"api_key":"Zx9Qw3Lp8Rt2Vn6Ym4Kb7Hc1Jd5Fg0Sa"}"#, &["Zx9Qw3Lp8Rt2Vn6Ym4Kb7Hc1Jd5Fg0Sa"]),
    case(Secret, "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", &[]),
    case(Secret, "id 123e4567-e89b-12d3-a456-426614174000", &[]),
    case(Secret, "file 2025-06-28T14-30-00.json.conflict-pixel9", &[]),
    case(Secret, "see https://example.com/docs/getting-started?lang=en", &[]),
    case(Secret, "uses sk-learn-style-pipelines-for-everything", &[]),
    case(Secret, "a-long-slug-made-of-ordinary-words-only", &[]),
    case(Secret, "CamelCaseIdentifierWithNumbers2024AndMore", &[]),
    // IP addresses.
    case(Ip, "ssh to 192.168.1.20 or 10.0.0.1", &["192.168.1.20", "10.0.0.1"]),
    case(Ip, "v6 2001:db8::1 and fe80::1ff:fe23:4567:890a", &["2001:db8::1", "fe80::1ff:fe23:4567:890a"]),
    case(Ip, "full 2001:0db8:85a3:0000:0000:8a2e:0370:7334", &["2001:0db8:85a3:0000:0000:8a2e:0370:7334"]),
    case(Ip, "The router answers at 203.0.113.9. Then 10.0.0.7, done.", &["203.0.113.9", "10.0.0.7"]),
    case(Ip, "version 1.2.3 and 1.2.3.4.5", &[]),
    case(Ip, "at 12:30:45 on 2024-06-28", &[]),
    case(Ip, "999.1.1.1 is no address, nor is v2.0.1.3", &[]),
];

#[test]
fn corpus_precision_and_recall_per_detector() {
    println!(
        "{:<8} {:>9} {:>9} {:>6} {:>6}",
        "detector", "precision", "recall", "found", "wanted"
    );
    let mut all_right = true;
    for detector in Detector::ALL {
        let (mut true_pos, mut false_pos, mut wanted) = (0usize, 0usize, 0usize);
        for c in CORPUS.iter().filter(|c| c.detector == detector) {
            wanted += c.values.len();
            // Each detector alone: what it takes of this text.
            let taken: Vec<&str> = find(c.text, &[detector])
                .iter()
                .map(|f| &c.text[f.start..f.end])
                .collect();
            for t in &taken {
                if c.values.contains(t) {
                    true_pos += 1;
                } else {
                    false_pos += 1;
                    println!("  {} took {t:?} from {:?}", detector.name(), c.text);
                }
            }
            for v in c.values.iter().filter(|v| !taken.contains(v)) {
                println!("  {} missed {v:?} in {:?}", detector.name(), c.text);
            }
        }
        let found = true_pos + false_pos;
        let precision = if found == 0 {
            1.0
        } else {
            true_pos as f64 / found as f64
        };
        let recall = if wanted == 0 {
            1.0
        } else {
            true_pos as f64 / wanted as f64
        };
        println!(
            "{:<8} {precision:>9.3} {recall:>9.3} {found:>6} {wanted:>6}",
            detector.name()
        );
        all_right &= precision >= 0.95 && recall >= 0.95 && wanted >= 5;
    }
    assert!(
        all_right,
        "a detector fell below 0.95 precision or recall (above)"
    );
}

#[test]
fn dates_times_and_plain_numbers_are_taken_by_no_detector() {
    for text in [
        "2024-06-28",
        "28/06/2024",
        "2024-06-28T14:30:00Z",
        "12:30:45",
        "1717171717",
        "42",
        "3.14159",
        "1,299.00",
        "v1.2.3",
        "page 12 of 340",
    ] {
        assert!(
            find(text, &Detector::ALL).is_empty(),
            "{text:?}: {:?}",
            find(text, &Detector::ALL)
        );
    }
}

#[test]
fn findings_never_overlap_and_follow_the_text() {
    let text = r#"{"who":"ghost@example.com","card":"4111 1111 1111 1111","ip":"10.0.0.1","key":"ghp_1A2b3C4d5E6f7G8h9I0jKlMnOpQrStUvWxYz"}"#;
    let found = find(text, &Detector::ALL);
    let kinds: Vec<Detector> = found.iter().map(|f| f.detector).collect();
    assert_eq!(kinds, vec![Email, Card, Ip, Secret]);
    for pair in found.windows(2) {
        assert!(pair[0].end <= pair[1].start, "{found:?}");
    }
    // A detector left out finds nothing.
    assert!(find(text, &[Phone, Iban]).is_empty());
}

#[test]
fn detector_names_round_trip() {
    for d in Detector::ALL {
        assert_eq!(Detector::from_name(d.name()), Some(d));
    }
    assert_eq!(Detector::from_name("address"), None);
}
