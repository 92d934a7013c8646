// The widget's styles, inside its shadow root: nothing leaks out, and
// `:host { all: initial }` stops the page's inherited styles leaking in.
// Themable with CSS custom properties set anywhere on the page (they
// inherit into the shadow root): --skald-accent, --skald-accent-text,
// --skald-bg, --skald-text, --skald-muted, --skald-border,
// --skald-bot-bubble, --skald-font, --skald-radius, --skald-z-index,
// --skald-width, --skald-height, --skald-offset.

export const CSS = `
:host{all:initial}
.r{--a:var(--skald-accent,#4f46e5);--at:var(--skald-accent-text,#fff);--bg:var(--skald-bg,#fff);--tx:var(--skald-text,#1f2328);--mu:var(--skald-muted,#656d76);--bd:var(--skald-border,#d8dee4);--bb:var(--skald-bot-bubble,#f1f3f5);--er:#b42318;--rad:var(--skald-radius,16px);--off:var(--skald-offset,20px);
font:15px/1.45 var(--skald-font,system-ui,-apple-system,"Segoe UI",Roboto,sans-serif);color:var(--tx);-webkit-font-smoothing:antialiased}
.r[data-theme=dark]{--bg:var(--skald-bg,#16181d);--tx:var(--skald-text,#e6e8eb);--mu:var(--skald-muted,#9aa3ad);--bd:var(--skald-border,#30353d);--bb:var(--skald-bot-bubble,#23272e);--er:#ff8a80}
@media (prefers-color-scheme:dark){.r[data-theme=auto]{--bg:var(--skald-bg,#16181d);--tx:var(--skald-text,#e6e8eb);--mu:var(--skald-muted,#9aa3ad);--bd:var(--skald-border,#30353d);--bb:var(--skald-bot-bubble,#23272e);--er:#ff8a80}}
*{box-sizing:border-box}
[hidden]{display:none!important}
button{font:inherit;color:inherit;cursor:pointer}
button:focus-visible,textarea:focus-visible,.log:focus-visible,a:focus-visible{outline:3px solid var(--a);outline-offset:2px}
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
.l{position:fixed;bottom:var(--off);right:var(--off);z-index:var(--skald-z-index,2147483000);width:56px;height:56px;border:0;border-radius:50%;background:var(--a);color:var(--at);box-shadow:0 6px 20px rgba(0,0,0,.25);display:grid;place-items:center;transition:transform .15s}
.l:hover{transform:scale(1.06)}
.l[data-activity]::after{content:"";position:absolute;top:3px;right:3px;width:12px;height:12px;border-radius:50%;background:var(--er);border:2px solid var(--bg)}
.l .ix,.r[data-open] .l .ic{display:none}.r[data-open] .l .ix{display:block}
.r[data-position=left] .l,.r[data-position=left] .p{right:auto;left:var(--off)}
.p{position:fixed;bottom:calc(var(--off) + 68px);right:var(--off);z-index:var(--skald-z-index,2147483000);width:var(--skald-width,380px);height:min(var(--skald-height,620px),calc(100vh - 110px));max-width:calc(100vw - 2*var(--off));display:flex;flex-direction:column;background:var(--bg);color:var(--tx);border:1px solid var(--bd);border-radius:var(--rad);box-shadow:0 12px 40px rgba(0,0,0,.22);overflow:hidden}
.hd{display:flex;align-items:center;gap:4px;padding:10px 8px 10px 16px;background:var(--a);color:var(--at)}
.hd h2{flex:1;margin:0;font-size:16px;font-weight:600;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.ib{width:36px;height:36px;border:0;border-radius:10px;background:transparent;display:grid;place-items:center}
.ib:hover{background:rgba(255,255,255,.16)}
.bn{padding:6px 16px;font-size:13px;background:#fff4ce;color:#4d3800;border-bottom:1px solid var(--bd)}
.log{flex:1;overflow-y:auto;padding:16px 14px;display:flex;flex-direction:column;gap:10px;overscroll-behavior:contain}
.em{margin:auto;color:var(--mu);text-align:center;padding:0 24px}
.m{display:flex;flex-direction:column;max-width:88%}
.m[data-role=user]{align-self:flex-end;align-items:flex-end}
.m[data-role=assistant]{align-self:flex-start}
.b{padding:9px 13px;border-radius:var(--rad);overflow-wrap:anywhere;min-height:38px}
.m[data-role=user] .b{background:var(--a);color:var(--at);border-bottom-right-radius:6px;white-space:pre-wrap}
.m[data-role=assistant] .b{background:var(--bb);border-bottom-left-radius:6px}
.m[data-state=error] .b{box-shadow:inset 0 0 0 1px var(--er)}
.b>:first-child{margin-top:0}.b>:last-child{margin-bottom:0}
.b p,.b ul,.b ol,.b pre,.b blockquote{margin:0 0 8px}
.b ul,.b ol{padding-left:22px}
.b .h{font-size:1.05em}
.b code{font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:rgba(127,127,127,.16);padding:1px 4px;border-radius:5px}
.b pre{overflow-x:auto;padding:8px 10px;background:rgba(127,127,127,.14);border-radius:8px}
.b pre code{background:none;padding:0}
.b blockquote{border-left:3px solid var(--bd);padding-left:10px;color:var(--mu)}
.b a{color:inherit;text-decoration:underline}
.b hr{border:0;border-top:1px solid var(--bd)}
.m[data-state=streaming][data-role=assistant] .b:empty::after{content:"";display:inline-block;width:34px;height:10px;background:radial-gradient(circle,var(--mu) 45%,transparent 50%) 0 50%/12px 10px repeat-x;opacity:.6;animation:k 1s steps(3) infinite}
@keyframes k{0%{width:12px}100%{width:40px}}
.nt{font-size:12px;color:var(--mu);margin:3px 6px 0}
.ti{font-size:13px;color:var(--mu);margin:0 6px 4px;font-style:italic}
.th{margin:0 0 6px;font-size:13px;color:var(--mu)}
.th summary{cursor:pointer;margin:0 6px}
.tt{margin:4px 0 0;padding:6px 10px;border-left:3px solid var(--bd);white-space:pre-wrap;overflow-wrap:anywhere;max-height:240px;overflow-y:auto}
.m[data-state=error] .nt{color:var(--er)}
.fb{display:flex;gap:2px;margin:2px 2px 0}
.fk{width:30px;height:30px;border:0;border-radius:8px;background:transparent;color:var(--mu);display:grid;place-items:center}
.fk:hover{background:rgba(127,127,127,.14)}
.fk[aria-pressed=true]{color:var(--a)}
.fc{flex-direction:column;align-items:stretch;gap:6px;padding:6px 0 0;border:0}
.fc label{font-size:12px;color:var(--mu)}
.fc textarea{min-height:56px;font-size:14px}
.fs{align-self:flex-end;border:0;border-radius:10px;padding:6px 14px;background:var(--a);color:var(--at)}
.al{margin:0 14px 8px;padding:8px 12px;border-radius:10px;font-size:13px;background:rgba(180,35,24,.1);color:var(--er)}
.al[data-kind=info]{background:rgba(127,127,127,.12);color:var(--tx)}
form{display:flex;align-items:flex-end;gap:8px;padding:10px 12px 12px;border-top:1px solid var(--bd)}
textarea{flex:1;resize:none;min-height:42px;max-height:140px;padding:10px 12px;border:1px solid var(--bd);border-radius:12px;background:var(--bg);color:var(--tx);font:inherit;line-height:1.4}
textarea::placeholder{color:var(--mu)}
.sb{flex:none;width:42px;height:42px;border:0;border-radius:12px;background:var(--a);color:var(--at);display:grid;place-items:center}
.sb:disabled{opacity:.45;cursor:default}
.sb[data-skald-stop]{background:var(--tx);color:var(--bg)}
.cc{position:absolute;right:70px;bottom:64px;font-size:11px;color:var(--mu)}
@media (max-width:480px){.p{inset:0;width:100%;height:100%;max-width:none;border-radius:0;border:0}.r[data-open] .l{display:none}textarea{font-size:16px}}
@media (prefers-reduced-motion:reduce){*{animation:none!important;transition:none!important}}
`;
