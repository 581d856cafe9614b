// The one catalogue of the web front: every visible string and accessible name, in English and
// German. The call UI and the console import it; the server reads the block between the two
// marker lines as JSON (control/web/catalogue.py) for the pages it renders itself and for the
// embed loader, so the block must stay strict JSON: double quotes, no trailing commas.
// The dashboard's own strings ("dash.*", two thirds of the whole) are the catalogue's second
// volume, dashboard/i18n.js, in the same form: a visitor's call page does not download them.
// One key space: a key lives in one volume only, and the server reads both (a test checks).
//
// `t(lang, key, vars)` fills `{name}` placeholders; a key missing in German falls back to
// English, a missing key shows itself (a test checks both languages have every key).
// `pickLang(el)` chooses the language: the element's own `lang`, the nearest `lang` above it,
// the page's, then the browser's `navigator.languages`; anything else is English.

/** @typedef {"en" | "de"} Lang */

// <catalogue>
export const MESSAGES = {
  "en": {
    "app.name": "Clickacall",
    "button.video": "Video call",
    "button.voice": "Voice call",
    "button.call": "Call us",
    "button.open": "Open now",
    "button.closed": "Closed, opens {when}",
    "button.closed_unknown": "Closed right now",
    "button.unavailable": "Nobody is available right now",
    "button.inactive": "Calls are switched off",
    "button.close": "Close the call window",
    "button.frame_title": "Call {business}",
    "button.newtab": "The call opened in a new tab.",
    "page.call_title": "Call {business}",
    "page.noscript": "This call page needs JavaScript to reach your camera and microphone. Please turn JavaScript on, or call us by another way.",
    "page.notfound_title": "This call link does not exist",
    "page.notfound_text": "The link may have been mistyped or removed. Please check it with the business that gave it to you.",
    "page.console_title": "Staff console",
    "page.signin_title": "Sign in",
    "page.email": "Email",
    "page.password": "Password",
    "page.password2": "Password again",
    "page.passwords_differ": "Password again: this is not the same password. Type the same password in both fields.",
    "page.signin": "Sign in",
    "page.signout": "Sign out",
    "page.invite_title": "Set your password",
    "page.invite_text": "Choose a password of 10 to 200 characters. You sign in with your email and this password.",
    "page.invite_submit": "Set password and sign in",
    "page.console_noscript": "The staff console needs JavaScript to ring and to carry calls.",
    "call.heading": "Call {business}",
    "call.loading": "Loading…",
    "call.state_open": "We are open. Choose how you want to talk.",
    "call.state_closed": "We are closed right now. We open {when}.",
    "call.state_closed_unknown": "We are closed right now.",
    "call.state_unavailable": "Nobody is available right now. You can ask us to call you back.",
    "call.state_inactive": "This call link is switched off.",
    "call.no_link": "This call link does not exist.",
    "call.preview": "Your camera",
    "call.preview_off": "Camera off",
    "call.mic_level": "Microphone level",
    "call.camera_select": "Camera",
    "call.mic_select": "Microphone",
    "call.device_default": "Default",
    "call.privacy": "Your camera and microphone are used only during the call. Nothing is stored on your device.",
    "call.starting": "Starting the call…",
    "call.ringing": "Calling {business}…",
    "call.waiting": "Waiting {time}",
    "call.cancel": "Cancel",
    "call.check_running": "Checking your connection…",
    "call.check_ok": "Your connection is ready for the call.",
    "call.check_partial": "Your connection works, with some restrictions.",
    "call.check_blocked": "Your network blocks calls. Try another network, such as mobile data, or ask us to call you back.",
    "call.connecting": "Connecting to {name}…",
    "call.connecting_anon": "Connecting…",
    "call.in_call": "In a call with {name}",
    "call.in_call_anon": "In a call",
    "call.with": "Talking to {name}",
    "call.remote_video": "Video of {name}",
    "call.remote_screen": "Screen shared by {name}",
    "call.staff": "our team",
    "call.timer": "Call time",
    "call.mute": "Mute",
    "call.camera": "Camera",
    "call.share": "Share screen",
    "call.hangup": "Hang up",
    "call.muted": "Your microphone is off.",
    "call.unmuted": "Your microphone is on.",
    "call.camera_off": "Your camera is off.",
    "call.camera_on": "Your camera is on.",
    "call.sharing": "You are sharing your screen.",
    "call.sharing_stopped": "You stopped sharing your screen.",
    "call.quality": "Connection: {level}",
    "call.quality_good": "good",
    "call.quality_fair": "fair",
    "call.quality_poor": "poor",
    "call.quality_unknown": "measuring",
    "call.reconnecting": "Reconnecting…",
    "call.peer_reconnecting": "{name} is reconnecting…",
    "call.reconnected": "Connected again.",
    "call.ended": "Call ended",
    "call.duration": "The call lasted {duration}.",
    "call.not_answered": "The call was not answered.",
    "call.cancelled": "You cancelled the call.",
    "call.reference": "Call reference",
    "call.reference_help": "Quote this reference to {business} to see, correct or erase what is kept about this call.",
    "call.again": "Call again",
    "call.close": "Close",
    "call.failed": "The call could not go on",
    "call.failed_text": "Something went wrong: {message}",
    "call.try_again": "Try again",
    "call.callback_closed": "We are closed right now",
    "call.callback_closed_when": "We open {when}. Leave your details and we will call you back.",
    "call.callback_unavailable": "Nobody is available right now",
    "call.callback_noanswer": "Nobody answered",
    "call.callback_blocked": "Your network blocks calls",
    "call.callback_text": "Leave your name and a phone number or email, and we will call you back.",
    "call.callback_name": "Name",
    "call.callback_contact": "Phone number or email",
    "call.callback_notice": "{business} uses these details only to call you back about this request, and deletes them with the call record.",
    "call.callback_send": "Ask for a call back",
    "call.callback_sent": "Thank you, we will call you back",
    "call.callback_error_name": "Please enter your name.",
    "call.callback_error_contact": "Please enter a phone number or an email address.",
    "call.perm_denied": "Your browser blocks this page from using the camera and microphone.",
    "call.perm_denied_camera": "Your browser blocks this page from using the camera.",
    "call.perm_missing_camera": "No camera was found. You can still make a voice call.",
    "call.perm_missing_mic": "No microphone was found. Connect one to make a call.",
    "call.perm_busy": "Another app is using your camera or microphone. Close it and try again.",
    "call.perm_insecure": "This page cannot use the camera here: it needs a secure (https) connection.",
    "call.perm_help_chrome": "To allow it, select the camera icon at the right of the address bar, choose Allow, then reload the page.",
    "call.perm_help_firefox": "To allow it, select the crossed-out camera icon left of the address, remove the block, then reload the page.",
    "call.perm_help_safari": "To allow it, open Safari's settings for this website, set Camera and Microphone to Allow, then reload the page.",
    "call.perm_help_edge": "To allow it, select the lock icon left of the address, set Camera and Microphone to Allow, then reload the page.",
    "call.perm_help_other": "To allow it, open your browser's site settings for this page, allow the camera and microphone, then reload the page.",
    "call.voice_instead": "You can still make a voice call.",
    "call.retry_devices": "Try the camera again",
    "call.network_error": "The connection to our server failed. Check your internet connection.",
    "call.busy": "Too many calls are coming in right now. Please try again in {seconds} seconds.",
    "console.heading": "Calls for {tenant}",
    "console.signed_in": "Signed in as {name}",
    "console.available": "Available",
    "console.status_available": "You are available for calls.",
    "console.status_away": "You are away: no calls ring here.",
    "console.status_away_missed": "You were set away after missed calls.",
    "console.arm": "Turn on call alerts",
    "console.armed": "Call alerts are on.",
    "console.arm_help": "Your browser plays sounds only after a click. Turn alerts on so that calls ring.",
    "console.ringing": "Ringing",
    "console.no_calls": "No calls ringing.",
    "console.call_from": "{link}: a visitor on {browser}, {os}",
    "console.call_details": "Waiting {time} · {region}",
    "console.region_unknown": "region unknown",
    "console.unknown": "unknown",
    "console.media_video": "video",
    "console.media_voice": "voice",
    "console.answer": "Answer",
    "console.decline": "Decline",
    "console.title_ringing": "Ringing: {link}",
    "console.notify_title": "A call is ringing",
    "console.notify_body": "{link}: a visitor is waiting",
    "console.answered_elsewhere": "The call was answered elsewhere.",
    "console.call_gone": "The call stopped ringing.",
    "console.wrapup": "Wrap-up: new calls will ring in {time}.",
    "console.ready": "Ready",
    "console.callbacks": "Call-back requests",
    "console.no_callbacks": "No open call-back requests.",
    "console.callback_item": "{name_contact} · {link} · asked {when}",
    "console.mark_done": "Mark done",
    "console.marked_done": "Call-back marked done.",
    "console.in_call": "In a call on {link}",
    "console.visitor_video": "Visitor's video",
    "console.visitor_screen": "Visitor's shared screen",
    "console.own_preview": "Your camera",
    "console.visitor_reconnecting": "The visitor is reconnecting…",
    "console.offline": "Connection to the server lost. Reconnecting…",
    "console.signed_out": "Your session ended. Please sign in again.",
    "console.error": "Something went wrong: {message}",
    "page.code_title": "Two-step sign-in",
    "page.code_text": "Type the 6-digit code your authenticator app shows for Clickacall.",
    "page.code": "Code",
    "page.code_hint": "Lost your phone? Type one of your recovery codes instead.",
    "page.code_submit": "Sign in",
    "page.code_cancel": "Cancel and sign out",
    "page.forbidden_title": "This page is for the business's admins",
    "page.forbidden_text": "You are signed in, but your account is not an admin account. Ask an admin of your business to make you one, or answer calls in the staff console.",
    "page.to_dashboard": "Dashboard",
    "page.code_wrong": "This code is wrong or has expired. Type the 6 digits your app shows now, or one of your recovery codes.",
    "err.missing": "this is required",
    "err.string_too_long": "at most {max_length} characters",
    "err.string_too_short": "too short: at least {min_length} characters",
    "err.string_pattern_mismatch": "contains characters that are not allowed here",
    "err.string_type": "must be text",
    "err.greater_than_equal": "must be at least {ge}",
    "err.less_than_equal": "must be at most {le}",
    "err.greater_than": "must be more than {gt}",
    "err.less_than": "must be less than {lt}",
    "err.int_parsing": "must be a whole number",
    "err.int_from_float": "must be a whole number",
    "err.int_type": "must be a whole number",
    "err.float_parsing": "must be a number",
    "err.float_type": "must be a number",
    "err.bool_parsing": "must be yes or no",
    "err.bool_type": "must be yes or no",
    "err.enum": "must be one of {expected}",
    "err.literal_error": "must be one of {expected}",
    "err.too_short": "choose at least {min_length}",
    "err.too_long": "at most {max_length} allowed",
    "err.list_type": "must be a list",
    "err.extra_forbidden": "is not expected here",
    "err.url_parsing": "must be a web address",
    "err.json_invalid": "is not valid JSON",
    "err.timezone_unknown": "unknown time zone '{zone}'",
    "err.window_not_numbers": "opening window {window} must be three whole numbers",
    "err.weekday_range": "weekday {weekday} must be 0 (Monday) to 6 (Sunday)",
    "err.window_minutes": "opening window {window}: minutes must be within a day",
    "err.window_empty": "opening window {window} is empty (start equals end)",
    "err.staff_unknown": "unknown staff member(s): {ids}",
    "err.email_invalid": "must be an email address such as name@example.com",
    "err.email_taken": "another staff member has this email",
    "err.email_none": "this member has no email to invite",
    "err.roles_none": "choose at least one of answering calls and admin",
    "err.password_too_short": "must be at least {min} characters",
    "err.password_too_long": "must be at most {max} characters",
    "err.password_control": "must not contain control characters",
    "err.password_wrong": "this is not your current password",
    "err.password_mismatch": "the two new passwords differ",
    "err.totp_not_started": "start setting up two-step sign-in first",
    "err.totp_wrong": "this code is wrong or has expired; type the 6 digits shown now",
    "err.url_too_long": "at most {max} characters",
    "err.url_invalid": "not a valid web address",
    "err.url_scheme": "must start with https://",
    "err.url_credentials": "must not carry a user name or password",
    "err.url_no_host": "must name a host",
    "err.url_unresolved": "the host {host} cannot be found",
    "err.url_private": "{host} is (or resolves to) {address}, a private or special-purpose address; webhooks go to public addresses only",
    "err.events_unknown": "unknown event '{event}'; one of {known}",
    "err.events_none": "choose at least one event",
    "err.hooks_too_many": "at most {max} endpoints; delete one first",
    "err.region_not_served": "no relay node serves {regions}; choose from {offered}",
    "err.call_ref_invalid": "must be 8 letters and digits, such as K7Q2-M9XD",
    "err.blank": "must not be blank",
    "err.date_invalid": "must be a date",
    "err.not_ours": "not one of this business's; choose from the list",
    "err.range_reversed": "the end is before the start",
    "err.range_too_long": "this range covers at most {days} days",
    "err.one_of": "must be one of {known}",
    "err.mos_invalid": "must be a number from 1 to 5, such as 3.5",
    "err.role_unknown": "'{role}' is not a role (staff or admin)",
    "err.admin_last": "the business must keep at least one active admin; make someone else an admin first",
    "err.self_deactivate": "you cannot deactivate yourself; ask another admin"
  },
  "de": {
    "app.name": "Clickacall",
    "button.video": "Videoanruf",
    "button.voice": "Sprachanruf",
    "button.call": "Rufen Sie uns an",
    "button.open": "Jetzt erreichbar",
    "button.closed": "Geschlossen, öffnet {when}",
    "button.closed_unknown": "Gerade geschlossen",
    "button.unavailable": "Gerade ist niemand erreichbar",
    "button.inactive": "Anrufe sind ausgeschaltet",
    "button.close": "Anruffenster schließen",
    "button.frame_title": "{business} anrufen",
    "button.newtab": "Der Anruf wurde in einem neuen Tab geöffnet.",
    "page.call_title": "{business} anrufen",
    "page.noscript": "Diese Anrufseite braucht JavaScript, um Kamera und Mikrofon zu nutzen. Bitte schalten Sie JavaScript ein oder erreichen Sie uns auf anderem Weg.",
    "page.notfound_title": "Diesen Anruflink gibt es nicht",
    "page.notfound_text": "Vielleicht ist der Link vertippt oder wurde entfernt. Bitte fragen Sie bei dem Unternehmen nach, von dem Sie ihn haben.",
    "page.console_title": "Mitarbeiterkonsole",
    "page.signin_title": "Anmelden",
    "page.email": "E-Mail",
    "page.password": "Passwort",
    "page.password2": "Passwort wiederholen",
    "page.passwords_differ": "Passwort wiederholen: Das ist nicht dasselbe Passwort. Geben Sie in beide Felder dasselbe Passwort ein.",
    "page.signin": "Anmelden",
    "page.signout": "Abmelden",
    "page.invite_title": "Passwort festlegen",
    "page.invite_text": "Wählen Sie ein Passwort mit 10 bis 200 Zeichen. Sie melden sich mit Ihrer E-Mail und diesem Passwort an.",
    "page.invite_submit": "Passwort festlegen und anmelden",
    "page.console_noscript": "Die Mitarbeiterkonsole braucht JavaScript, um zu klingeln und Anrufe zu führen.",
    "call.heading": "{business} anrufen",
    "call.loading": "Wird geladen…",
    "call.state_open": "Wir sind erreichbar. Wählen Sie, wie Sie sprechen möchten.",
    "call.state_closed": "Wir haben gerade geschlossen. Wir öffnen {when}.",
    "call.state_closed_unknown": "Wir haben gerade geschlossen.",
    "call.state_unavailable": "Gerade ist niemand erreichbar. Sie können um Rückruf bitten.",
    "call.state_inactive": "Dieser Anruflink ist ausgeschaltet.",
    "call.no_link": "Diesen Anruflink gibt es nicht.",
    "call.preview": "Ihre Kamera",
    "call.preview_off": "Kamera aus",
    "call.mic_level": "Mikrofonpegel",
    "call.camera_select": "Kamera",
    "call.mic_select": "Mikrofon",
    "call.device_default": "Standard",
    "call.privacy": "Kamera und Mikrofon werden nur während des Anrufs genutzt. Auf Ihrem Gerät wird nichts gespeichert.",
    "call.starting": "Anruf wird gestartet…",
    "call.ringing": "{business} wird angerufen…",
    "call.waiting": "Wartezeit {time}",
    "call.cancel": "Abbrechen",
    "call.check_running": "Ihre Verbindung wird geprüft…",
    "call.check_ok": "Ihre Verbindung ist bereit für den Anruf.",
    "call.check_partial": "Ihre Verbindung funktioniert, mit Einschränkungen.",
    "call.check_blocked": "Ihr Netzwerk blockiert Anrufe. Versuchen Sie ein anderes Netz, etwa mobile Daten, oder bitten Sie um Rückruf.",
    "call.connecting": "Verbindung mit {name}…",
    "call.connecting_anon": "Verbindung wird aufgebaut…",
    "call.in_call": "Im Gespräch mit {name}",
    "call.in_call_anon": "Im Gespräch",
    "call.with": "Sie sprechen mit {name}",
    "call.remote_video": "Video von {name}",
    "call.remote_screen": "Bildschirm von {name}",
    "call.staff": "unserem Team",
    "call.timer": "Gesprächsdauer",
    "call.mute": "Stummschalten",
    "call.camera": "Kamera",
    "call.share": "Bildschirm teilen",
    "call.hangup": "Auflegen",
    "call.muted": "Ihr Mikrofon ist aus.",
    "call.unmuted": "Ihr Mikrofon ist an.",
    "call.camera_off": "Ihre Kamera ist aus.",
    "call.camera_on": "Ihre Kamera ist an.",
    "call.sharing": "Sie teilen Ihren Bildschirm.",
    "call.sharing_stopped": "Sie teilen Ihren Bildschirm nicht mehr.",
    "call.quality": "Verbindung: {level}",
    "call.quality_good": "gut",
    "call.quality_fair": "mittel",
    "call.quality_poor": "schlecht",
    "call.quality_unknown": "wird gemessen",
    "call.reconnecting": "Verbindung wird wiederhergestellt…",
    "call.peer_reconnecting": "{name} verbindet sich neu…",
    "call.reconnected": "Wieder verbunden.",
    "call.ended": "Anruf beendet",
    "call.duration": "Der Anruf dauerte {duration}.",
    "call.not_answered": "Der Anruf wurde nicht angenommen.",
    "call.cancelled": "Sie haben den Anruf abgebrochen.",
    "call.reference": "Anrufnummer",
    "call.reference_help": "Nennen Sie {business} diese Nummer, um einzusehen, zu berichtigen oder zu löschen, was zu diesem Anruf gespeichert ist.",
    "call.again": "Erneut anrufen",
    "call.close": "Schließen",
    "call.failed": "Der Anruf konnte nicht fortgesetzt werden",
    "call.failed_text": "Etwas ist schiefgegangen: {message}",
    "call.try_again": "Erneut versuchen",
    "call.callback_closed": "Wir haben gerade geschlossen",
    "call.callback_closed_when": "Wir öffnen {when}. Hinterlassen Sie Ihre Angaben, wir rufen zurück.",
    "call.callback_unavailable": "Gerade ist niemand erreichbar",
    "call.callback_noanswer": "Niemand hat abgenommen",
    "call.callback_blocked": "Ihr Netzwerk blockiert Anrufe",
    "call.callback_text": "Hinterlassen Sie Ihren Namen und eine Telefonnummer oder E-Mail, wir rufen Sie zurück.",
    "call.callback_name": "Name",
    "call.callback_contact": "Telefonnummer oder E-Mail",
    "call.callback_notice": "{business} nutzt diese Angaben nur für den Rückruf zu dieser Anfrage und löscht sie mit dem Anrufeintrag.",
    "call.callback_send": "Um Rückruf bitten",
    "call.callback_sent": "Danke, wir rufen Sie zurück",
    "call.callback_error_name": "Bitte geben Sie Ihren Namen ein.",
    "call.callback_error_contact": "Bitte geben Sie eine Telefonnummer oder E-Mail-Adresse ein.",
    "call.perm_denied": "Ihr Browser erlaubt dieser Seite Kamera und Mikrofon nicht.",
    "call.perm_denied_camera": "Ihr Browser erlaubt dieser Seite die Kamera nicht.",
    "call.perm_missing_camera": "Keine Kamera gefunden. Sie können trotzdem einen Sprachanruf führen.",
    "call.perm_missing_mic": "Kein Mikrofon gefunden. Schließen Sie eines an, um anzurufen.",
    "call.perm_busy": "Eine andere App nutzt Kamera oder Mikrofon. Schließen Sie sie und versuchen Sie es erneut.",
    "call.perm_insecure": "Diese Seite kann die Kamera hier nicht nutzen: Sie braucht eine sichere (https) Verbindung.",
    "call.perm_help_chrome": "Zum Erlauben wählen Sie das Kamerasymbol rechts in der Adressleiste, dann Zulassen, und laden die Seite neu.",
    "call.perm_help_firefox": "Zum Erlauben wählen Sie das durchgestrichene Kamerasymbol links der Adresse, heben die Sperre auf und laden die Seite neu.",
    "call.perm_help_safari": "Zum Erlauben öffnen Sie die Safari-Einstellungen für diese Website, stellen Kamera und Mikrofon auf Erlauben und laden die Seite neu.",
    "call.perm_help_edge": "Zum Erlauben wählen Sie das Schloss links der Adresse, stellen Kamera und Mikrofon auf Zulassen und laden die Seite neu.",
    "call.perm_help_other": "Zum Erlauben öffnen Sie die Website-Einstellungen Ihres Browsers, erlauben Kamera und Mikrofon und laden die Seite neu.",
    "call.voice_instead": "Sie können trotzdem einen Sprachanruf führen.",
    "call.retry_devices": "Kamera erneut versuchen",
    "call.network_error": "Die Verbindung zu unserem Server ist fehlgeschlagen. Prüfen Sie Ihre Internetverbindung.",
    "call.busy": "Gerade gehen zu viele Anrufe ein. Bitte versuchen Sie es in {seconds} Sekunden noch einmal.",
    "console.heading": "Anrufe für {tenant}",
    "console.signed_in": "Angemeldet als {name}",
    "console.available": "Erreichbar",
    "console.status_available": "Sie sind für Anrufe erreichbar.",
    "console.status_away": "Sie sind abwesend: hier klingelt nichts.",
    "console.status_away_missed": "Sie wurden nach verpassten Anrufen auf abwesend gesetzt.",
    "console.arm": "Anrufsignale einschalten",
    "console.armed": "Anrufsignale sind an.",
    "console.arm_help": "Ihr Browser spielt Töne erst nach einem Klick. Schalten Sie die Signale ein, damit Anrufe klingeln.",
    "console.ringing": "Es klingelt",
    "console.no_calls": "Kein Anruf klingelt.",
    "console.call_from": "{link}: ein Besucher mit {browser}, {os}",
    "console.call_details": "Wartet {time} · {region}",
    "console.region_unknown": "Region unbekannt",
    "console.unknown": "unbekannt",
    "console.media_video": "Video",
    "console.media_voice": "Sprache",
    "console.answer": "Annehmen",
    "console.decline": "Ablehnen",
    "console.title_ringing": "Es klingelt: {link}",
    "console.notify_title": "Ein Anruf klingelt",
    "console.notify_body": "{link}: ein Besucher wartet",
    "console.answered_elsewhere": "Der Anruf wurde anderswo angenommen.",
    "console.call_gone": "Der Anruf klingelt nicht mehr.",
    "console.wrapup": "Nachbereitung: neue Anrufe klingeln in {time}.",
    "console.ready": "Bereit",
    "console.callbacks": "Rückrufwünsche",
    "console.no_callbacks": "Keine offenen Rückrufwünsche.",
    "console.callback_item": "{name_contact} · {link} · vom {when}",
    "console.mark_done": "Erledigt",
    "console.marked_done": "Rückruf als erledigt markiert.",
    "console.in_call": "Im Gespräch über {link}",
    "console.visitor_video": "Video des Besuchers",
    "console.visitor_screen": "Geteilter Bildschirm des Besuchers",
    "console.own_preview": "Ihre Kamera",
    "console.visitor_reconnecting": "Der Besucher verbindet sich neu…",
    "console.offline": "Verbindung zum Server verloren. Neuer Versuch…",
    "console.signed_out": "Ihre Sitzung ist beendet. Bitte melden Sie sich erneut an.",
    "console.error": "Etwas ist schiefgegangen: {message}",
    "page.code_title": "Anmeldung in zwei Schritten",
    "page.code_text": "Geben Sie den 6-stelligen Code ein, den Ihre Authenticator-App für Clickacall anzeigt.",
    "page.code": "Code",
    "page.code_hint": "Handy verloren? Geben Sie stattdessen einen Ihrer Wiederherstellungscodes ein.",
    "page.code_submit": "Anmelden",
    "page.code_cancel": "Abbrechen und abmelden",
    "page.forbidden_title": "Diese Seite ist für die Administratoren des Unternehmens",
    "page.forbidden_text": "Sie sind angemeldet, aber Ihr Konto ist kein Administratorkonto. Bitten Sie einen Administrator Ihres Unternehmens darum, oder nehmen Sie Anrufe in der Mitarbeiterkonsole an.",
    "page.to_dashboard": "Dashboard",
    "page.code_wrong": "Dieser Code ist falsch oder abgelaufen. Geben Sie die 6 Ziffern ein, die Ihre App jetzt zeigt, oder einen Ihrer Wiederherstellungscodes.",
    "err.missing": "bitte ausfüllen",
    "err.string_too_long": "höchstens {max_length} Zeichen",
    "err.string_too_short": "zu kurz: mindestens {min_length} Zeichen",
    "err.string_pattern_mismatch": "enthält Zeichen, die hier nicht erlaubt sind",
    "err.string_type": "muss ein Text sein",
    "err.greater_than_equal": "muss mindestens {ge} sein",
    "err.less_than_equal": "darf höchstens {le} sein",
    "err.greater_than": "muss größer als {gt} sein",
    "err.less_than": "muss kleiner als {lt} sein",
    "err.int_parsing": "muss eine ganze Zahl sein",
    "err.int_from_float": "muss eine ganze Zahl sein",
    "err.int_type": "muss eine ganze Zahl sein",
    "err.float_parsing": "muss eine Zahl sein",
    "err.float_type": "muss eine Zahl sein",
    "err.bool_parsing": "muss ja oder nein sein",
    "err.bool_type": "muss ja oder nein sein",
    "err.enum": "muss einer dieser Werte sein: {expected}",
    "err.literal_error": "muss einer dieser Werte sein: {expected}",
    "err.too_short": "wählen Sie mindestens {min_length} aus",
    "err.too_long": "höchstens {max_length} erlaubt",
    "err.list_type": "muss eine Liste sein",
    "err.extra_forbidden": "ist hier nicht vorgesehen",
    "err.url_parsing": "muss eine Webadresse sein",
    "err.json_invalid": "ist kein gültiges JSON",
    "err.timezone_unknown": "unbekannte Zeitzone „{zone}“",
    "err.window_not_numbers": "das Zeitfenster {window} muss aus drei ganzen Zahlen bestehen",
    "err.weekday_range": "der Wochentag {weekday} muss zwischen 0 (Montag) und 6 (Sonntag) liegen",
    "err.window_minutes": "das Zeitfenster {window}: die Minuten müssen innerhalb eines Tages liegen",
    "err.window_empty": "das Zeitfenster {window} ist leer (Beginn gleich Ende)",
    "err.staff_unknown": "unbekannte Teammitglieder: {ids}",
    "err.email_invalid": "bitte geben Sie eine E-Mail-Adresse ein, etwa name@example.com",
    "err.email_taken": "diese E-Mail-Adresse hat bereits eine andere Person im Team",
    "err.email_none": "diese Person hat keine E-Mail-Adresse für eine Einladung",
    "err.roles_none": "wählen Sie mindestens eines: Anrufe annehmen oder das Unternehmenskonto verwalten",
    "err.password_too_short": "muss mindestens {min} Zeichen lang sein",
    "err.password_too_long": "darf höchstens {max} Zeichen lang sein",
    "err.password_control": "darf keine Steuerzeichen enthalten",
    "err.password_wrong": "das ist nicht Ihr aktuelles Passwort",
    "err.password_mismatch": "die beiden neuen Passwörter stimmen nicht überein",
    "err.totp_not_started": "richten Sie zuerst die Anmeldung in zwei Schritten ein",
    "err.totp_wrong": "dieser Code ist falsch oder abgelaufen; geben Sie die 6 Ziffern ein, die jetzt angezeigt werden",
    "err.url_too_long": "höchstens {max} Zeichen",
    "err.url_invalid": "keine gültige Webadresse",
    "err.url_scheme": "muss mit https:// beginnen",
    "err.url_credentials": "darf keinen Benutzernamen und kein Passwort enthalten",
    "err.url_no_host": "muss einen Host nennen",
    "err.url_unresolved": "der Host {host} ist nicht auffindbar",
    "err.url_private": "{host} ist (oder verweist auf) {address}, eine private oder besondere Adresse; Webhooks gehen nur an öffentliche Adressen",
    "err.events_unknown": "unbekanntes Ereignis „{event}“; möglich sind {known}",
    "err.events_none": "wählen Sie mindestens ein Ereignis",
    "err.hooks_too_many": "höchstens {max} Endpunkte; löschen Sie zuerst einen",
    "err.region_not_served": "kein Relay-Knoten bedient {regions}; wählen Sie aus {offered}",
    "err.call_ref_invalid": "muss aus 8 Buchstaben und Ziffern bestehen, etwa K7Q2-M9XD",
    "err.blank": "darf nicht leer sein",
    "err.date_invalid": "muss ein Datum sein",
    "err.not_ours": "gehört nicht zu Ihrem Unternehmen; wählen Sie aus der Liste",
    "err.range_reversed": "das Ende liegt vor dem Beginn",
    "err.range_too_long": "dieser Zeitraum umfasst höchstens {days} Tage",
    "err.one_of": "muss einer dieser Werte sein: {known}",
    "err.mos_invalid": "muss eine Zahl von 1 bis 5 sein, etwa 3,5",
    "err.role_unknown": "„{role}“ ist keine Rolle (Anrufe annehmen oder Administrator)",
    "err.admin_last": "das Unternehmen braucht mindestens einen aktiven Administrator; machen Sie zuerst eine andere Person zum Administrator",
    "err.self_deactivate": "Sie können sich nicht selbst deaktivieren; bitten Sie einen anderen Administrator darum"
  }
};
// </catalogue>

/** @type {readonly Lang[]} */
export const LANGS = ["en", "de"];

/**
 * The language for a piece of UI: the element's `lang`, the nearest one above it, the page's,
 * then the browser's preferences; English when none of them is one we have.
 * @param {Element | null} [el]
 * @returns {Lang}
 */
export function pickLang(el) {
  const tried = [];
  const own = el?.closest?.("[lang]")?.getAttribute("lang");
  if (own) tried.push(own);
  if (typeof document !== "undefined" && document.documentElement.lang) {
    tried.push(document.documentElement.lang);
  }
  if (typeof navigator !== "undefined") tried.push(...(navigator.languages || [navigator.language]));
  for (const tag of tried) {
    const lang = normalise(tag);
    if (lang) return lang;
  }
  return "en";
}

/**
 * "de-AT" → "de"; null when we have no such language.
 * @param {string | null | undefined} tag
 * @returns {Lang | null}
 */
export function normalise(tag) {
  const base = String(tag || "").toLowerCase().split(/[-_]/)[0];
  return base === "en" || base === "de" ? base : null;
}

/**
 * A message in `lang` with `{name}` placeholders filled from `vars`.
 * @param {Lang} lang
 * @param {string} key
 * @param {Record<string, string | number>} [vars]
 * @returns {string}
 */
export function t(lang, key, vars) {
  /** @type {Record<string, string>} */
  const table = MESSAGES[lang] || MESSAGES.en;
  /** @type {Record<string, string>} */
  const en = MESSAGES.en;
  // a count of one may have its own wording ("key.one"), chosen by the language's plural rules
  const one = typeof vars?.n === "number" && new Intl.PluralRules(lang).select(vars.n) === "one";
  const text = (one && (table[`${key}.one`] ?? en[`${key}.one`])) || (table[key] ?? en[key] ?? key);
  if (!vars) return text;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in vars ? String(vars[name]) : whole));
}

/**
 * `t` bound to one language.
 * @param {Lang} lang
 * @returns {(key: string, vars?: Record<string, string | number>) => string}
 */
export function translator(lang) {
  return (key, vars) => t(lang, key, vars);
}

/**
 * A duration for people: "45 s", "3 min 05 s", "1 h 02 min".
 * @param {number} seconds
 * @returns {string}
 */
export function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  if (h) return `${h} h ${String(m).padStart(2, "0")} min`;
  if (m) return `${m} min ${String(r).padStart(2, "0")} s`;
  return `${r} s`;
}

/**
 * A clock for a running call: "0:42", "12:05", "1:02:09".
 * @param {number} seconds
 * @returns {string}
 */
export function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${r}` : `${m}:${r}`;
}

/**
 * When a closed link opens next, in the visitor's own time zone: "today at 09:00",
 * "Monday at 09:00" (German: "heute um 09:00", "Montag um 09:00").
 * @param {Lang} lang
 * @param {number} epoch seconds
 * @param {number} now seconds
 * @returns {string}
 */
export function when(lang, epoch, now) {
  const at = new Date(epoch * 1000);
  const time = new Intl.DateTimeFormat(lang, { hour: "2-digit", minute: "2-digit" }).format(at);
  const day = Math.floor((epoch - now) / 86400);
  const sameDay = new Date(now * 1000).toDateString() === at.toDateString();
  const word = lang === "de" ? "um" : "at";
  if (sameDay) return `${lang === "de" ? "heute" : "today"} ${word} ${time}`;
  if (day < 6) {
    const weekday = new Intl.DateTimeFormat(lang, { weekday: "long" }).format(at);
    return `${weekday} ${word} ${time}`;
  }
  const date = new Intl.DateTimeFormat(lang, { day: "numeric", month: "long" }).format(at);
  return `${date} ${word} ${time}`;
}
