"""The page at `/` over plain HTTP (tests/test_browser.py drives it in a browser)."""

import re


def test_page_and_every_file_it_links_are_served(client):
    page = client.get("/")
    links = re.findall(r'(?:href|src)="(/[^"]+)"', page.get_data(as_text=True))
    assert page.status_code == 200 and len(links) == 3  # app.css, api.js, app.js
    for link in links:
        response = client.get(link)
        assert response.status_code == 200, link
        response.close()


def test_page_offers_every_priority(client):
    html = client.get("/").get_data(as_text=True)
    assert re.findall(r'<option value="(\w+)"[^>]*>(?:High|Normal|Low)', html) == [
        "high",
        "normal",
        "low",
    ]
