/*
  condavault's shipped rule set (docs/scanning.md): every payload file, text or binary

  Every rule carries meta:
    verdict    = "malicious" | "suspicious" | "info"
    capability = "network" | "exec" (info rules only: what install-time code can do, for the version diff)
  External variables set per scanned file:
    filepath        the member path inside the archive (e.g. "bin/.foo-post-link.sh")
    install_script  true for link scripts (pre/post-link, pre-unlink), activate.d and deactivate.d scripts
    startup_hook    true for *.pth files and sitecustomize/usercustomize (run by every Python start)
*/

rule crypto_miner
{
    meta:
        verdict = "malicious"
        description = "a cryptocurrency miner (pool URL, miner name or options)"
    strings:
        $pool1 = "stratum+tcp://"
        $pool2 = "stratum+ssl://"
        $pool3 = "stratum+tls://"
        $pool4 = "pool.minexmr.com"
        $pool5 = "xmr.nanopool.org"
        $pool6 = "pool.supportxmr.com"
        $pool7 = "xmrpool.eu"
        $pool8 = "moneroocean.stream"
        $pool9 = "c3pool.com"
        $pool10 = "hashvault.pro"
        $xmrig1 = "xmrig"
        $xmrig2 = "XMRig"
        $opt1 = "--donate-level"
        $opt2 = "randomx"
        $opt3 = "RandomX"
        $opt4 = "cryptonight"
    condition:
        any of ($pool*) or (any of ($xmrig*) and any of ($opt*))
}

rule eicar_test_file
{
    meta:
        verdict = "malicious"
        description = "the EICAR anti-virus test file"
    strings:
        $eicar = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
    condition:
        $eicar
}
