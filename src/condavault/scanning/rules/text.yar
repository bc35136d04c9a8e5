/*
  condavault's shipped rule set (docs/scanning.md): text files (scripts and sources: no NUL byte in their first 8 KiB)

  Every rule carries meta:
    verdict    = "malicious" | "suspicious" | "info"
    capability = "network" | "exec" (info rules only: what install-time code can do, for the version diff)
  External variables set per scanned file:
    filepath        the member path inside the archive (e.g. "bin/.foo-post-link.sh")
    install_script  true for link scripts (pre/post-link, pre-unlink), activate.d and deactivate.d scripts
    startup_hook    true for *.pth files and sitecustomize/usercustomize (run by every Python start)
*/

rule reverse_shell
{
    meta:
        verdict = "malicious"
        description = "a reverse shell (a shell wired to a network socket)"
    strings:
        $a = /(ba)?sh\s+-i\s+[>&0-9\s]*\/dev\/(tcp|udp)\/[^\s\/]+\/[0-9]+/
        $b = /exec\s+[0-9]+<>\/dev\/tcp\//
        $c = /\bnc(at)?\s+(-[a-z]*\s+)*-e\s+\/bin\/(ba)?sh/
        $d = /mkfifo\s+\/tmp\/\S+\s*;\s*(cat|nc)\s[^\n]{0,100}\|\s*\/bin\/(ba)?sh\s+-i/
        $e = /dup2\(\s*\w+\.fileno\(\)\s*,\s*0\s*\)[^\n]{0,400}(\/bin\/(ba)?sh|pty\.spawn)/ 
        $f = /socat\s+[^\n]{0,100}exec:['"]?(\/bin\/)?(ba)?sh/ nocase
        $g = /New-Object\s+System\.Net\.Sockets\.TCPClient[^\n]{0,400}(iex|Invoke-Expression)/ nocase
    condition:
        any of them
}

rule obfuscated_exec
{
    meta:
        verdict = "malicious"
        description = "exec/eval of a decoded (base64, zlib, marshal, rot13, hex) blob"
    strings:
        $py1 = /\b(exec|eval)\s*\(\s*(__import__\(\s*['"](base64|zlib|marshal|codecs|binascii)['"]\s*\)|base64|zlib|marshal|codecs|binascii|bytes\.fromhex)\s*\.\s*(b64decode|b32decode|b16decode|decodebytes|decompress|loads|decode|unhexlify|a2b_base64)\s*\(/
        $py2 = /\b(exec|eval)\s*\(\s*compile\s*\(\s*(base64|zlib|marshal|codecs)\.\w+\(/
        $py3 = /\b(exec|eval)\s*\(\s*(zlib\.decompress|marshal\.loads)\s*\(\s*base64\.\w+\(/
        $sh1 = /(echo|printf)\s+['"]?[A-Za-z0-9+\/=]{40,}['"]?\s*\|\s*base64\s+(-d|--decode|-D)\s*\|\s*(ba)?sh/
        $sh2 = /base64\s+(-d|--decode)\s*<<<[^\n]{0,10}[A-Za-z0-9+\/=]{40,}[^\n]{0,20}\|\s*(ba)?sh/
        $ps1 = /(powershell|pwsh)(\.exe)?\s+[^\n]{0,60}-(e|enc|encodedcommand)\s+[A-Za-z0-9+\/=]{40,}/ nocase
    condition:
        any of them
}
