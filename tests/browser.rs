//! The todo app's page in a real browser (headless Chromium, driven over
//! the DevTools protocol): a person types a name and a todo into the page's
//! inputs, clicks "add", sees the todo in the list, and clicks its "done"
//! button. Needs Debian's chromium: `tests/setup-browser` installs it.

use std::time::Duration;

use exo_harness::*;
use serde_json::{Value, json};

/// How long the page gets to show what a click changed.
const SHOWN: Duration = Duration::from_secs(15);
/// What helps to understand a failed wait: the page as it is.
const PAGE_HTML: &str = "document.body.innerHTML";
/// The list as the page shows it: one `{id, text}` per item.
const LIST: &str = r##"[...document.querySelectorAll("#list li")]
    .map(li => ({id: li.dataset.id, text: li.firstChild.textContent}))"##;
/// The page's error line.
const ERROR: &str = r#"document.getElementById("error").textContent"#;

/// Opens the page and waits until it shows the first list and the stats.
fn open<'b>(browser: &'b mut Browser, app: &TodoApp) -> Page<'b> {
    let mut page = browser.open(&app.url("/"));
    assert_eq!(page.eval("document.title"), "todos");
    page.wait_until(
        r#"document.getElementById("stats").textContent.startsWith("todos per person")"#,
        SHOWN,
        PAGE_HTML,
    );
    page
}

/// Adds a todo as a person does (types the name and the text, clicks
/// "add"), waits until the list shows it, and returns the list.
fn add(page: &mut Page, person: &str, text: &str) -> Vec<Value> {
    page.fill("#user", person);
    page.fill("#text", text);
    page.click(r#"#add button[type="submit"]"#);
    let wanted = serde_json::to_string(text).unwrap();
    let items = page.wait_until(
        &format!("(() => {{ const l = {LIST}; return l.some(i => i.text === {wanted}) && l; }})()"),
        SHOWN,
        PAGE_HTML,
    );
    assert_eq!(
        page.eval(r#"document.getElementById("text").value"#),
        "",
        "the input is emptied after adding"
    );
    items.as_array().expect("an array").clone()
}

/// The id the page shows for the item with `text`.
fn id_of(items: &[Value], text: &str) -> String {
    items
        .iter()
        .find(|i| i["text"] == text)
        .and_then(|i| i["id"].as_str())
        .unwrap_or_else(|| panic!("no {text:?} in {items:?}"))
        .to_owned()
}

/// The texts of a person's todos, through the HTTP API.
fn api_texts(app: &TodoApp, person: &str) -> Vec<Value> {
    let list = app.call("GET", &format!("/todos/{person}"), None);
    assert_eq!(list.status, 200, "{}", list.body);
    let items = list.json()["items"].clone();
    items
        .as_array()
        .unwrap_or_else(|| panic!("no items in {items}"))
        .iter()
        .map(|i| i["text"].clone())
        .collect()
}

#[test]
fn a_person_adds_a_todo_in_the_page_and_marks_it_done() {
    let mut browser = Browser::launch();
    let app = TodoApp::start();
    eprintln!("browser: {}", browser.version());
    let mut page = open(&mut browser, &app);
    assert_eq!(page.eval(LIST), json!([]));

    let person = "carol";
    let text = "buy oat milk — ünïcode & <b>no markup</b>";
    let items = add(&mut page, person, text);
    assert_eq!(items.len(), 1, "{items:?}");
    let id = id_of(&items, text);
    assert_eq!(page.eval(ERROR), "");
    // No markup went through: the text is text.
    assert_eq!(
        page.eval(r##"document.querySelectorAll("#list b").length"##),
        0
    );
    // The stats (counted by the C service) reach the page too.
    page.wait_until(
        &format!(r#"document.getElementById("stats").textContent.includes('"{person}":1')"#),
        SHOWN,
        PAGE_HTML,
    );

    // The HTTP API has the same item, under that person only.
    let list = app.call("GET", &format!("/todos/{person}"), None);
    assert_eq!(list.status, 200, "{}", list.body);
    let api_items = list.json()["items"].clone();
    assert_eq!(api_items.as_array().map(Vec::len), Some(1), "{api_items}");
    assert_eq!(api_items[0]["text"], text);
    assert_eq!(api_items[0]["id"].to_string(), id);
    assert_eq!(api_texts(&app, "alice"), Vec::<Value>::new());

    // Click "done": the item leaves the list, and the API; it is the
    // shown list's item, whatever person was typed since.
    page.fill("#user", "someone-else");
    page.click(&format!(r#"#list li[data-id="{id}"] button.del"#));
    page.wait_until(
        &format!(r#"document.querySelectorAll('#list li[data-id="{id}"]').length === 0"#),
        SHOWN,
        PAGE_HTML,
    );
    assert_eq!(page.eval(LIST), json!([]));
    assert_eq!(api_texts(&app, person), Vec::<Value>::new());
    assert_eq!(page.eval(ERROR), "");

    let errors = page.errors();
    assert!(errors.is_empty(), "the page reported errors: {errors:?}");
}

#[test]
fn done_on_a_todo_already_gone_says_so_and_refreshes_the_list() {
    let mut browser = Browser::launch();
    let app = TodoApp::start();
    let mut page = open(&mut browser, &app);

    let person = "dave";
    add(&mut page, person, "first");
    let items = add(&mut page, person, "second");
    assert_eq!(items.len(), 2, "{items:?}");
    let first = id_of(&items, "first");

    // Another tab (here: the API) marks "first" done; this page still
    // shows it. Its "done" button then tells why nothing is left to do,
    // and the page shows the list as it is now.
    let gone = app.call("DELETE", &format!("/todos/{person}/{first}"), None);
    assert_eq!(gone.status, 200, "{}", gone.body);
    page.click(&format!(r#"#list li[data-id="{first}"] button.del"#));
    page.wait_until(
        &format!(
            "(() => {{ const l = {LIST}; \
             return l.length === 1 && l[0].text === 'second' && {ERROR} === 'todo.not-found'; }})()"
        ),
        SHOWN,
        PAGE_HTML,
    );
    assert_eq!(api_texts(&app, person), ["second"]);

    let errors = page.errors();
    assert!(errors.is_empty(), "the page reported errors: {errors:?}");
}
