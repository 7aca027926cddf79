"use client";
import { useEffect, useState } from "react";

export default function Counter() {
  const [api, setApi] = useState("pending");
  useEffect(() => {
    fetch("/api/hello")
      .then((r) => r.json())
      .then((d) => setApi(d.hello), () => setApi("error"));
  }, []);
  return <p id="api" data-state={api}>{api}</p>;
}
